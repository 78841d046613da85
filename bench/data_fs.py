"""The file system under a benchmark's data dirs (issue 18, round eight; docs/benchmarks.md).

This machine's root file system is ext4 without a journal, where creating a file is slow for a minute or more
after many were removed; ``journaled_ext4`` gives a benchmark a fresh ext4 with a journal instead, so that two
versions compare without the disk's history in between.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def file_system(path: Path) -> str:
    """The file system ``path`` is on, and for ext4 whether it has a journal: without one, each new inode is
    checked against every inode freed in its group in the last minute or more (ext4's ``recently_deleted``),
    which made creating a file cost milliseconds after a large removal here (docs/benchmarks.md, round eight)."""
    found = ("?", "?", "?")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point, rest = fields[4], fields[fields.index("-") + 1 :]
            if path.resolve().is_relative_to(point) and len(point) >= len(found[0]):
                found = (point, rest[0], fields[2])
    point, kind, device = found
    if kind != "ext4":
        return kind
    try:
        name = Path(f"/sys/dev/block/{device}").resolve().name
    except OSError:
        return "ext4"
    return "ext4, with a journal" if any(Path("/proc/fs/jbd2").glob(f"{name}-*")) else "ext4, no journal"


@contextmanager
def journaled_ext4(under: Path, size_gib: int = 8) -> Iterator[Path]:
    """A fresh ext4 file system with a journal (mkfs.ext4's defaults, as on most hosts), in a sparse image
    file under ``under``, loop-mounted: a root-only way to measure off this machine's journal-less disk."""
    work = Path(tempfile.mkdtemp(prefix="aihub-bench-fs-", dir=under))
    os.chmod(work, 0o755)  # (node users find their way to their scratch dirs, as in /var/tmp)
    image, point = work / "fs.img", work / "mnt"
    try:
        with image.open("wb") as f:
            f.truncate(size_gib << 30)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
        point.mkdir()
        subprocess.run(["mount", "-o", "loop", str(image), str(point)], check=True)
        try:
            yield point
        finally:
            subprocess.run(["umount", str(point)], check=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
