"""Packing ``path`` outputs into archives and unpacking them safely where a downstream node needs them.

A ``path`` output (SPEC.md §3) is a file or a directory. :func:`pack` turns it into a gzip-compressed tar
archive that is *deterministic*: members are sorted, ownership and times are zeroed and permissions are
normalised to 0644/0755, so the same content always gives the same bytes — and therefore the same sha256,
which is what content addressing and caching rely on. A pax global header records whether the root was a file
or a directory, so :func:`unpack` restores the same shape at the target path.

Archives are untrusted input when they are unpacked (a node's output is whatever the node's command wrote), so
:func:`unpack` refuses anything that could write outside the target or exhaust the machine:

- member names that are absolute or contain ``..``, and members nested under a symlink member;
- symlinks or hardlinks whose target escapes the target directory (checked lexically up front, and symlinks
  once more by resolving them in the finished tree, which defeats chains of individually harmless links);
- device, FIFO and other special files;
- more than ``max_members`` members, more than ``max_bytes`` of uncompressed data, and decompression bombs
  (more than ``max_ratio`` uncompressed bytes per compressed byte, once past a few MB).

Sizes are measured on the decompressed stream as it is read, never taken from headers alone. Everything is
extracted into a fresh temporary directory next to the target (created by us, so nothing in it can be a
pre-existing symlink) and renamed into place only once every check has passed: a refused archive leaves the
target exactly as it was. The target's own parent directories belong to the node's filesystem and are trusted.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_MEMBERS",
    "DEFAULT_MAX_RATIO",
    "ArtifactError",
    "pack",
    "sha256_file",
    "unpack",
]

DEFAULT_MAX_BYTES = 10 * 1024**3
DEFAULT_MAX_MEMBERS = 1_000_000
DEFAULT_MAX_RATIO = 200

# The ratio check starts only past this many uncompressed bytes: small archives (a few headers and a tiny
# file) legitimately have absurd ratios.
RATIO_GRACE_BYTES = 4 * 1024 * 1024
# pax / GNU long-name headers are read into memory whole by tarfile, so their size must be bounded.
_MAX_EXTENSION_HEADER = 1024 * 1024
_MAX_CHAINED_EXTENSION_HEADERS = 8
_ROOT_KIND_KEY = "AIHUB.root"
_CHUNK = 1024 * 1024


class ArtifactError(Exception):
    """A path output cannot be packed, or an archive is refused when unpacking."""


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file, read in chunks (never whole in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------- pack


def pack(src: Path, dest_archive: Path) -> None:
    """Pack the file or directory ``src`` into the gzip tar ``dest_archive`` (written atomically).

    A directory is stored as its contents with relative member names; a file as one member named after it.
    Symlinks inside a directory are kept only when relative and resolving inside it.
    """
    if not src.exists():
        raise ArtifactError(f"output path '{src}' does not exist")
    kind = "dir" if src.is_dir() else "file"
    if kind == "file" and not src.is_file():
        raise ArtifactError(f"output path '{src}' is not a regular file or directory")
    if kind == "dir" and _is_within(os.path.realpath(dest_archive.parent), os.path.realpath(src)):
        raise ArtifactError(f"cannot pack '{src}' into an archive inside it ('{dest_archive}')")
    dest_archive.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest_archive.parent, prefix=f".{dest_archive.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw:
            _write_archive(src, kind, raw)
        os.replace(tmp_name, dest_archive)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _write_archive(src: Path, kind: str, raw: BinaryIO) -> None:
    # filename="" and mtime=0 keep the gzip header free of anything that varies between runs.
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(
            fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT, pax_headers={_ROOT_KIND_KEY: kind}
        ) as tar,
    ):
        if kind == "file":
            _add_regular(tar, src.name, src, os.stat(src))
            return
        root_real = os.path.realpath(src)
        for name, path in _walk_sorted(src):
            _add_member(tar, name, path, src, root_real)


def _walk_sorted(root: Path) -> Iterator[tuple[str, Path]]:
    """Every entry under ``root`` as (relative posix name, path), sorted, parents before children."""
    pending = [""]
    while pending:
        rel = pending.pop()
        with os.scandir(root / rel if rel else root) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs = []
        for entry in entries:
            name = f"{rel}/{entry.name}" if rel else entry.name
            yield name, Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(name)
        pending.extend(reversed(subdirs))


def _add_member(tar: tarfile.TarFile, name: str, path: Path, src: Path, root_real: str) -> None:
    st = os.lstat(path)
    if stat.S_ISREG(st.st_mode):
        _add_regular(tar, name, path, st)
    elif stat.S_ISDIR(st.st_mode):
        tar.addfile(_header(name, tarfile.DIRTYPE, 0o755))
    elif stat.S_ISLNK(st.st_mode):
        info = _header(name, tarfile.SYMTYPE, 0o777)
        info.linkname = _checked_link_target(name, path, src, root_real)
        tar.addfile(info)
    else:
        raise ArtifactError(f"cannot pack '{name}' in '{src}': not a regular file, directory or symlink")


def _add_regular(tar: tarfile.TarFile, name: str, path: Path, st: os.stat_result) -> None:
    info = _header(name, tarfile.REGTYPE, 0o755 if st.st_mode & 0o111 else 0o644)
    info.size = st.st_size
    with open(path, "rb") as f:
        try:
            tar.addfile(info, f)
        except OSError as exc:
            raise ArtifactError(f"cannot pack '{name}': {exc} (was it modified while packing?)") from exc


def _header(name: str, type_: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _checked_link_target(name: str, path: Path, src: Path, root_real: str) -> str:
    target = os.readlink(path)
    if os.path.isabs(target):
        raise ArtifactError(f"cannot pack symlink '{name}' -> '{target}': absolute links are not allowed")
    # Resolving the real link (not just the text) also catches chains such as `a -> .` plus `b -> a/..`.
    if not _is_within(os.path.realpath(path), root_real):
        raise ArtifactError(f"cannot pack symlink '{name}' -> '{target}': it points outside '{src}'")
    return target


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


# ------------------------------------------------------------------------------------------------- unpack


class _CountingReader:
    """Counts the compressed bytes handed to the decompressor."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.count += len(data)
        return data


@dataclass
class _Budget:
    """Limits enforced while the decompressed tar stream is read."""

    max_bytes: int
    max_members: int
    max_ratio: int
    compressed: _CountingReader
    uncompressed: int = 0
    members: int = 0
    current: str = "<start of archive>"
    chained_extensions: int = 0

    def on_read(self, n: int) -> None:
        self.uncompressed += n
        if self.uncompressed > self.max_bytes:
            raise ArtifactError(
                f"archive expands beyond the limit of {self.max_bytes} bytes (at member '{self.current}')"
            )
        if self.uncompressed > RATIO_GRACE_BYTES and self.uncompressed > self.max_ratio * max(
            self.compressed.count, 1
        ):
            raise ArtifactError(
                f"archive looks like a decompression bomb: {self.uncompressed} bytes from "
                f"{self.compressed.count} compressed, ratio over {self.max_ratio} (at member '{self.current}')"
            )

    def on_header(self, info: tarfile.TarInfo) -> None:
        if info.type in (
            tarfile.XHDTYPE,
            tarfile.XGLTYPE,
            tarfile.GNUTYPE_LONGNAME,
            tarfile.GNUTYPE_LONGLINK,
        ):
            self.chained_extensions += 1
            if info.size > _MAX_EXTENSION_HEADER:
                raise ArtifactError(f"extended header of {info.size} bytes after member '{self.current}'")
            if self.chained_extensions > _MAX_CHAINED_EXTENSION_HEADERS:
                raise ArtifactError(f"too many chained extended headers after member '{self.current}'")
        else:
            self.chained_extensions = 0

    def on_member(self, info: tarfile.TarInfo) -> None:
        self.current = info.name
        self.members += 1
        if self.members > self.max_members:
            raise ArtifactError(f"archive has more than {self.max_members} members (at member '{info.name}')")
        if info.size > self.max_bytes - self.uncompressed:
            raise ArtifactError(
                f"member '{info.name}' declares {info.size} bytes, over the limit of {self.max_bytes} bytes"
            )


class _MeteredStream:
    """The decompressed tar stream; every read is charged to the budget before tarfile sees it."""

    def __init__(self, gz: gzip.GzipFile, budget: _Budget) -> None:
        self._gz = gz
        self._budget = budget

    def read(self, size: int = -1) -> bytes:
        data = self._gz.read(size if 0 <= size <= _CHUNK else _CHUNK)
        self._budget.on_read(len(data))
        return data


def _guarded_tarinfo(budget: _Budget) -> type[tarfile.TarInfo]:
    class GuardedTarInfo(tarfile.TarInfo):
        # frombuf is where every raw header (including pax/GNU extension headers) is parsed, before tarfile
        # reads any extension payload into memory.
        @classmethod
        def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
            info = super().frombuf(buf, encoding, errors)
            budget.on_header(info)
            return info

    return GuardedTarInfo


@dataclass
class _Extraction:
    """State of one extraction into a fresh directory ``root``."""

    root: Path
    kind: str = "dir"
    files: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)
    symlinks: list[tuple[str, str]] = field(default_factory=list)


def unpack(
    archive: Path,
    target: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_ratio: int = DEFAULT_MAX_RATIO,
) -> None:
    """Restore the file or directory packed in ``archive`` at ``target``, or raise :class:`ArtifactError`.

    ``target`` may not exist (its parents are created), or be a file or an empty directory (replaced).
    """
    target = Path(os.path.abspath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.unpack-"))
    try:
        state = _Extraction(root=staging / "root")
        state.root.mkdir()
        _extract_all(archive, state, max_bytes=max_bytes, max_members=max_members, max_ratio=max_ratio)
        try:
            _finish_links(state)
        except OSError as exc:
            raise ArtifactError(f"cannot unpack '{archive}': {exc}") from exc
        _move_into_place(state, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract_all(
    archive: Path, state: _Extraction, *, max_bytes: int, max_members: int, max_ratio: int
) -> None:
    with open(archive, "rb") as raw:
        compressed = _CountingReader(raw)
        budget = _Budget(max_bytes, max_members, max_ratio, compressed)
        try:
            with (
                gzip.GzipFile(fileobj=compressed, mode="rb") as gz,  # type: ignore[arg-type]
                tarfile.open(
                    fileobj=_MeteredStream(gz, budget),  # type: ignore[arg-type]
                    mode="r|",
                    tarinfo=_guarded_tarinfo(budget),
                ) as tar,
            ):
                while (member := tar.next()) is not None:
                    tar.members.clear()  # tarfile keeps every header; we only need the current one
                    state.kind = tar.pax_headers.get(_ROOT_KIND_KEY, "dir")
                    budget.on_member(member)
                    _extract_member(tar, member, state)
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, OSError) as exc:
            if isinstance(exc, tarfile.FilterError):
                raise ArtifactError(f"refused member '{exc.tarinfo.name}': {exc}") from exc
            raise ArtifactError(f"cannot unpack '{archive}' (at member '{budget.current}'): {exc}") from exc
    if state.kind == "file" and (len(state.files) != 1 or len(state.seen) != 1):
        raise ArtifactError("archive of a file output must hold exactly one regular file")


def _safe_name(member: tarfile.TarInfo) -> str:
    """The member's normalised relative name; refuses absolute names and ``..``."""
    name = member.name
    if name.startswith("/") or os.path.isabs(name):
        raise ArtifactError(f"refused member '{name}': absolute path")
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if ".." in parts:
        raise ArtifactError(f"refused member '{name}': '..' component")
    return "/".join(parts)


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, state: _Extraction) -> None:
    name = _safe_name(member)
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()) or member.issparse():
        raise ArtifactError(
            f"refused member '{member.name}': special file (device, FIFO or other) not allowed"
        )
    if not name:
        if member.isdir():
            return  # the root directory itself ("." or "./")
        raise ArtifactError(f"refused member '{member.name}': empty name")
    if name in state.seen:
        raise ArtifactError(f"refused member '{member.name}': duplicate name")
    if state.kind == "file" and not member.isreg():
        raise ArtifactError(f"refused member '{member.name}': a file output holds only one regular file")
    if member.issym():
        _check_symlink_text(name, member.linkname)
    elif member.islnk():
        link_source = _hardlink_source(name, member.linkname, state)
    mode = _filtered_mode(member, state.root)
    state.seen.add(name)
    dest = state.root / name
    if member.isdir():
        dest.mkdir(parents=True, exist_ok=True)
    elif member.issym():
        state.symlinks.append((name, member.linkname))
    elif member.islnk():
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(state.root / link_source, dest, follow_symlinks=False)
        state.files.add(name)
    else:
        _write_regular(tar, member, dest, mode)
        state.files.add(name)


def _filtered_mode(member: tarfile.TarInfo, root: Path) -> int | None:
    """The mode a regular member gets. The stdlib's data filter is the base layer (modes, ownership); the
    checks of ``_extract_member`` are ours. Python before 3.11.4 (Debian 12's 3.11.2) has no filter: there the
    same mode rule as the filter's — no setuid/setgid/sticky, no group/other write, owner read+write, execute
    bits only where the owner's is set."""
    if hasattr(tarfile, "data_filter"):
        return tarfile.data_filter(member, str(root)).mode
    if not (member.isreg() or member.islnk()):
        return None
    mode = member.mode & 0o755
    if not mode & 0o100:
        mode &= ~0o111
    return mode | 0o600


def _write_regular(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, mode: int | None) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    source = tar.extractfile(member)
    assert source is not None  # regular members always have a data stream
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with source, os.fdopen(os.open(dest, flags, 0o600), "wb") as out:
        while chunk := source.read(_CHUNK):
            out.write(chunk)
    if mode is not None:
        os.chmod(dest, mode)


def _check_symlink_text(name: str, linkname: str) -> None:
    if not linkname or os.path.isabs(linkname):
        raise ArtifactError(f"refused member '{name}': symlink to '{linkname}' escapes the target")
    resolved = os.path.normpath(os.path.join(os.path.dirname(name), linkname))
    if resolved == ".." or resolved.startswith("../"):
        raise ArtifactError(f"refused member '{name}': symlink to '{linkname}' escapes the target")


def _hardlink_source(name: str, linkname: str, state: _Extraction) -> str:
    """The normalised name of the earlier regular file a hardlink member points to."""
    parts = [p for p in PurePosixPath(linkname).parts if p != "."]
    if os.path.isabs(linkname) or ".." in parts:
        raise ArtifactError(f"refused member '{name}': hardlink to '{linkname}' escapes the target")
    source = "/".join(parts)
    if source not in state.files:
        raise ArtifactError(
            f"refused member '{name}': hardlink to '{linkname}', not a file earlier in the archive"
        )
    return source


def _finish_links(state: _Extraction) -> None:
    """Create the symlinks last (so no write ever goes through one), then verify what they resolve to."""
    link_names = {name for name, _ in state.symlinks}
    for name in sorted(state.seen):
        parents = PurePosixPath(name).parents
        through = next((str(p) for p in parents if str(p) in link_names), None)
        if through is not None:
            raise ArtifactError(f"refused member '{name}': it lies under the symlink '{through}'")
    for name, linkname in state.symlinks:
        dest = state.root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(linkname, dest)
    root_real = os.path.realpath(state.root)
    for name, linkname in state.symlinks:
        if not _is_within(os.path.realpath(state.root / name), root_real):
            raise ArtifactError(f"refused member '{name}': symlink to '{linkname}' escapes the target")


def _move_into_place(state: _Extraction, target: Path) -> None:
    if state.kind == "file":
        (source,) = state.files
        restored = state.root / source
    else:
        restored = state.root
        os.chmod(restored, 0o755)
    try:
        os.replace(restored, target)
    except OSError as exc:
        raise ArtifactError(f"cannot restore the output at '{target}': {exc}") from exc
