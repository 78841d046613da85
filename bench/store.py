"""Artifact store benchmark (issue 17): pack + upload + download + unpack of ~1 GB of mixed files.

Run from the repository root: ``.venv/bin/python bench/store.py [--mib 1024]``. docs/benchmarks.md ("Artifact
store") holds the figures. One run, three ways, on the same tree:

- **S3**: ``aihub.engine.artifacts.pack`` → ``S3ArtifactStore.put_file`` (hash, HEAD, multipart upload) →
  ``S3ArtifactStore.open`` (streamed download to a temp file, sha256 checked) → ``unpack``; the server is
  ``moto_server`` on 127.0.0.1 (loopback), started here;
- **local disk**: the same with ``LocalArtifactStore`` (put = a rename + hash; open = the sha256 check);
- **tar | zstd**: ``tar -cf - . | zstd -q -o FILE`` then ``zstd -dc FILE | tar -xf -`` (the floor: no
  determinism, no digest, no safety checks on unpacking).

The tree (``--mib`` MiB, default 1024): a third in 2,000 small text files (4-16 KiB of log-like lines), a
third in 8 large text files, a third in 8 random (incompressible) binary files. Written once under /var/tmp,
removed at the end. Each phase is wall time; the ratio compares totals.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aihub.engine.artifacts import pack, unpack  # noqa: E402
from aihub.storage.base import ArtifactStore  # noqa: E402
from aihub.storage.local import LocalArtifactStore  # noqa: E402
from aihub.storage.s3 import S3ArtifactStore, S3Config  # noqa: E402
from tests.s3support import CREDENTIALS, S3Server  # noqa: E402

MIB = 1024 * 1024


def make_tree(root: Path, total_mib: int) -> int:
    """The mixed tree; returns its size in bytes."""
    rng = random.Random(17)
    third = total_mib * MIB // 3
    words = [f"{w}" for w in ("epoch", "loss", "accuracy", "step", "lr", "batch", "INFO", "WARN", "model")]
    size = 0
    small = root / "small"
    for i in range(2000):
        d = small / f"d{i // 100:02d}"
        d.mkdir(parents=True, exist_ok=True)
        target = third // 2000
        lines = []
        length = 0
        while length < target:
            line = f"{i:05d} {rng.choice(words)}={rng.random():.6f} {rng.choice(words)} {length}\n"
            lines.append(line)
            length += len(line)
        data = "".join(lines).encode()
        (d / f"f{i:05d}.log").write_bytes(data)
        size += len(data)
    text = root / "text"
    text.mkdir()
    block = "".join(
        f"{n:08d} {rng.choice(words)}={rng.random():.6f} {rng.choice(words)}\n" for n in range(20000)
    ).encode()
    for i in range(8):
        with open(text / f"t{i}.csv", "wb") as f:
            written = 0
            while written < third // 8:
                f.write(block)
                written += len(block)
        size += written
    binary = root / "binary"
    binary.mkdir()
    for i in range(8):
        with open(binary / f"b{i}.bin", "wb") as f:
            for _ in range(third // 8 // MIB):
                f.write(os.urandom(MIB))
        size += third // 8 // MIB * MIB
    return size


async def through_store(store: ArtifactStore, src: Path, work: Path) -> dict[str, float]:
    times: dict[str, float] = {}
    archive = work / "archive.tar.gz"
    t = time.perf_counter()
    await asyncio.to_thread(pack, src, archive)
    times["pack"] = time.perf_counter() - t
    times["archive MiB"] = archive.stat().st_size / MIB
    t = time.perf_counter()
    digest, _ = await store.put_file(archive)
    times["upload"] = time.perf_counter() - t
    t = time.perf_counter()
    async with store.open(digest) as local:
        times["download"] = time.perf_counter() - t
        t = time.perf_counter()
        await asyncio.to_thread(unpack, local, work / "out")
        times["unpack"] = time.perf_counter() - t
    return times


def through_zstd(src: Path, work: Path) -> dict[str, float]:
    archive = work / "archive.tar.zst"
    t = time.perf_counter()
    subprocess.run(f'tar -cf - -C "{src}" . | zstd -q -o "{archive}"', shell=True, check=True)
    times = {"pack": time.perf_counter() - t, "archive MiB": archive.stat().st_size / MIB}
    (work / "out").mkdir()
    t = time.perf_counter()
    subprocess.run(f'zstd -dc "{archive}" | tar -xf - -C "{work / "out"}"', shell=True, check=True)
    times["unpack"] = time.perf_counter() - t
    return times


def total(times: dict[str, float]) -> float:
    return sum(v for k, v in times.items() if k != "archive MiB")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=1024, help="size of the tree (default 1024)")
    args = parser.parse_args()
    for name, value in CREDENTIALS.items():
        os.environ.setdefault(name, value)
    base = Path(tempfile.mkdtemp(prefix="aihub-bench-store-", dir="/var/tmp"))
    server = S3Server.start(base / "moto.log")
    try:
        src = base / "tree"
        t = time.perf_counter()
        size = make_tree(src, args.mib)
        print(f"tree: {size / MIB:.0f} MiB in {time.perf_counter() - t:.1f} s", flush=True)
        results: dict[str, dict[str, float]] = {}

        work = base / "s3"
        work.mkdir()
        config = S3Config(f"s3://{server.bucket()}/bench", endpoint_url=server.endpoint)
        results["S3 (moto_server, loopback)"] = await through_store(
            S3ArtifactStore(config, work / "dl"), src, work
        )
        shutil.rmtree(work)

        work = base / "local"
        work.mkdir()
        results["local disk"] = await through_store(LocalArtifactStore(base / "store"), src, work)
        shutil.rmtree(work)

        work = base / "zstd"
        work.mkdir()
        results["tar | zstd to a file"] = through_zstd(src, work)
        shutil.rmtree(work)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)

    print(
        f"\n{platform.node()} {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, Python {platform.python_version()}"
    )
    print(f"{'way':<28} {'pack':>7} {'upload':>7} {'download':>9} {'unpack':>7} {'total':>7} {'archive':>9}")
    for way, times in results.items():
        cells = [f"{times[k]:7.1f}" if k in times else "      -" for k in ("pack", "upload")]
        cells.append(f"{times['download']:9.1f}" if "download" in times else "        -")
        cells.append(f"{times['unpack']:7.1f}")
        print(f"{way:<28} {' '.join(cells)} {total(times):7.1f} {times['archive MiB']:7.0f} MiB")
    s3_times, local_times = results["S3 (moto_server, loopback)"], results["local disk"]
    s3, local = total(s3_times), total(local_times)
    print(
        f"\nS3 / local disk: {s3 / local:.2f}x (goal <= 1.5x); without pack (the same work for both):"
        f" {(s3 - s3_times['pack']) / (local - local_times['pack']):.2f}x;"
        f" local disk / tar|zstd: {local / total(results['tar | zstd to a file']):.1f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
