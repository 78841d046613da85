"""Artifacts and logs on local disk under the data directory (the default storage).

Artifacts are content-addressed: an archive whose sha256 is ``abcdef…`` lives at ``root/ab/cdef…``. Putting
moves the file into a staging area inside the store first and hashes it *there*, so the digest always
describes the bytes actually stored; the final rename is atomic, and a digest already present keeps its copy
(identical content, so either is right). Digests are validated as 64 lowercase hex characters before they
touch the filesystem, which makes path traversal through a digest impossible.

Logs are append-only files ``root/<run_id>/<node>/<attempt>.log`` written by executors and read by byte
offset. Readers never hold a whole log or a whole line: :meth:`LocalLogStore.tail_lines` reads backwards from
the end a block at a time, and :meth:`LocalLogStore.follow` polls the file and yields lines, cutting any line
longer than :data:`MAX_LINE_BYTES` into chunks. All file I/O runs in worker threads so the event loop never
blocks on a slow disk or a big file.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import BinaryIO

from aihub.settings import Settings, absolute_path
from aihub.storage.base import ArtifactCorrupt, ArtifactMissing, ArtifactStore, DoneCheck, pause

__all__ = ["MAX_LINE_BYTES", "LocalArtifactStore", "LocalLogStore", "build_storage"]

_DIGEST = re.compile(r"[0-9a-f]{64}")
_NODE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COPY_CHUNK = 1024 * 1024

MAX_LINE_BYTES = 64 * 1024
"""Longest piece of a line that ``follow`` yields at once; longer lines arrive in several chunks."""
TAIL_LINE_CHARS = 8 * 1024
"""Lines returned by ``tail_lines`` are cut to their last this-many bytes (marked with a leading "…")."""
_READ_LIMIT_CAP = 8 * 1024 * 1024


class LocalArtifactStore:
    """Content-addressed archives in ``root/ab/cdef…`` (sha256 hex digest split after two characters)."""

    def __init__(self, root: Path) -> None:
        self.root = absolute_path(root)
        self.location = str(self.root)

    async def put_file(self, archive: Path) -> tuple[str, int]:
        """Move ``archive`` into the store (it is consumed); returns (sha256 hex digest, size in bytes)."""
        return await asyncio.to_thread(self._put_file, Path(archive))

    def path(self, digest: str) -> Path:
        """The stored archive for ``digest``; KeyError for a malformed or unknown digest."""
        location = self._location(digest)
        if not location.is_file():
            raise KeyError(digest)
        return location

    async def exists(self, digest: str) -> bool:
        """Whether ``digest`` is stored (False for a malformed digest)."""
        try:
            location = self._location(digest)
        except KeyError:
            return False
        return await asyncio.to_thread(location.is_file)

    @asynccontextmanager
    async def open(self, digest: str) -> AsyncIterator[Path]:
        """The stored archive itself, once its sha256 has been checked (read once, in a thread)."""
        location = self._existing(digest)
        actual = await asyncio.to_thread(_hash_file, location)
        if actual != digest:
            raise ArtifactCorrupt(corrupt_message(digest, actual, self.location))
        yield location

    async def stream(self, digest: str) -> AsyncIterator[bytes]:
        """The archive's bytes in 1 MiB chunks; :class:`ArtifactCorrupt` at the end if they do not hash right."""
        location = self._existing(digest)
        f = await asyncio.to_thread(open, location, "rb")
        try:
            hasher = hashlib.sha256()
            while chunk := await asyncio.to_thread(f.read, _COPY_CHUNK):
                hasher.update(chunk)
                yield chunk
        finally:
            f.close()
        if hasher.hexdigest() != digest:
            raise ArtifactCorrupt(corrupt_message(digest, hasher.hexdigest(), self.location))

    def _existing(self, digest: str) -> Path:
        try:
            return self.path(digest)
        except KeyError:
            raise ArtifactMissing(missing_message(digest, self.location)) from None

    def _location(self, digest: str) -> Path:
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise KeyError(digest)
        return self.root / digest[:2] / digest[2:]

    def _put_file(self, archive: Path) -> tuple[str, int]:
        staging = self.root / ".staging"
        staging.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=staging, suffix=".part")
        os.close(fd)
        staged = Path(name)
        try:
            digest, size = _move_and_hash(archive, staged)
            dest = self._location(digest)
            if dest.is_file():
                staged.unlink()  # same content already stored
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                staged.chmod(0o444)
                os.replace(staged, dest)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        return digest, size


def _move_and_hash(source: Path, staged: Path) -> tuple[str, int]:
    """Move ``source`` to ``staged`` (same filesystem: rename; else copy) and hash what was stored."""
    try:
        os.replace(source, staged)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        with open(source, "rb") as src, open(staged, "wb") as dst:
            digest, size = _hash_stream(src, dst)
        source.unlink()
        return digest, size
    with open(staged, "rb") as f:
        return _hash_stream(f, None)


def _hash_file(path: Path) -> str:
    with open(path, "rb") as f:
        return _hash_stream(f, None)[0]


def missing_message(digest: object, location: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        return f"{digest!r} is not an artifact digest (64 lowercase hex characters)"
    return f"artifact {digest} is not in the store {location}"


def corrupt_message(digest: str, actual: str, location: str) -> str:
    return (
        f"artifact {digest} in the store {location} is corrupt: its bytes hash to {actual}; refused"
        " (it will not be used)"
    )


def _hash_stream(src: BinaryIO, copy_to: BinaryIO | None) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := src.read(_COPY_CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if copy_to is not None:
            copy_to.write(chunk)
    return digest.hexdigest(), size


#: what a live reader sees where the log capper dropped lines it had not read yet
COMPACTED_NOTE = "[aihub: the log went over its limit (AIHUB_MAX_LOG_BYTES); lines were dropped here]"


class LocalLogStore:
    """Append-only log files ``root/<run_id>/<node>/<attempt>.log``, one per node attempt."""

    def __init__(self, root: Path, *, poll_interval: float = 0.05) -> None:
        self.root = absolute_path(root)  # handed to node supervisors, which change directory first
        self.poll_interval = poll_interval

    def path(self, run_id: int, node: str, attempt: int) -> Path:
        """The log file of one attempt, for writing; its parent directory is created."""
        location = self._location(run_id, node, attempt)
        location.parent.mkdir(parents=True, exist_ok=True)
        return location

    def location(self, run_id: int, node: str, attempt: int) -> Path:
        """Where the log file of one attempt is (or would be); nothing is created."""
        return self._location(run_id, node, attempt)

    async def archive(self, run_id: int, node: str, attempt: int) -> None:
        """Nothing to do: the file on local disk is the archive."""

    async def checkpoint(self, run_id: int, node: str, attempt: int) -> None:
        """Nothing to do: readers on this disk follow the file itself."""

    async def archive_build_log(self, build_id: int, path: Path) -> None:
        """A module build has ended: nothing to do on local disk (``path`` is the archive)."""

    async def read_build_log(self, build_id: int, path: Path, offset: int, limit: int) -> bytes:
        """Up to ``limit`` bytes of a build's log from ``offset`` (b"" while nothing is written)."""
        return (await asyncio.to_thread(_read_at, path, max(offset, 0), limit))[0]

    async def download(self, run_id: int, node: str, attempt: int) -> AsyncIterator[bytes] | None:
        """The whole log in chunks, or None when the attempt has no log (yet)."""
        location = self._location(run_id, node, attempt)
        f = await asyncio.to_thread(_open_if_exists, location, 0)
        if f is None:
            return None
        return _file_chunks(f)

    async def size(self, run_id: int, node: str, attempt: int) -> int:
        """Bytes written so far (0 for a log that does not exist yet)."""
        location = self._location(run_id, node, attempt)
        return await asyncio.to_thread(_size_or_zero, location)

    async def read(
        self, run_id: int, node: str, attempt: int, offset: int = 0, limit: int = 65536
    ) -> tuple[bytes, int]:
        """Up to ``limit`` bytes (capped at 8 MiB) from ``offset``; returns (data, next_offset).

        A missing log reads as ``(b"", 0)``.
        """
        if offset < 0 or limit <= 0:
            raise ValueError(f"offset must be >= 0 and limit > 0 (got {offset}, {limit})")
        location = self._location(run_id, node, attempt)
        return await asyncio.to_thread(_read_at, location, offset, min(limit, _READ_LIMIT_CAP))

    async def tail_lines(self, run_id: int, node: str, attempt: int, count: int) -> list[str]:
        """The last ``count`` lines, reading only the end of the file; long lines keep their last 8 KiB."""
        if count <= 0:
            return []
        location = self._location(run_id, node, attempt)
        return await asyncio.to_thread(_tail_lines, location, count)

    async def follow(
        self,
        run_id: int,
        node: str,
        attempt: int,
        *,
        done: DoneCheck,
        offset: int = 0,
        wake: asyncio.Event | None = None,
    ) -> AsyncIterator[str]:
        """Yield lines from ``offset`` as they are appended, until ``done()`` is true and the file is drained.

        ``done()`` is awaited *before* each drain, so everything written before it turned true is yielded.
        Lines are decoded as UTF-8 (invalid bytes replaced) without their line ending; a line longer than
        :data:`MAX_LINE_BYTES` arrives as several chunks, each at most that long.
        """
        location = self._location(run_id, node, attempt)
        splitter = _LineSplitter()
        f: BinaryIO | None = None
        position = offset  # (the reader's, in the file)
        try:
            while True:
                finished = await done()
                more = _changed(location, position)
                while more:  # (one trip to a worker thread per look: a short log is one look)
                    f, data, compacted, more, position = await asyncio.to_thread(_look, f, location, offset)
                    for line in splitter.feed(data):
                        yield line
                    if compacted:
                        # the log capper cut the middle out (aihub.storage.logcap): go on from the new end
                        for line in splitter.flush():
                            yield line
                        yield COMPACTED_NOTE
                if finished:
                    for line in splitter.flush():
                        yield line
                    return
                await pause(self.poll_interval, wake)
        finally:
            if f is not None:
                f.close()

    def _location(self, run_id: int, node: str, attempt: int) -> Path:
        if not _is_index(run_id) or not _is_index(attempt):
            raise ValueError(
                f"run id and attempt must be non-negative integers (got {run_id!r}, {attempt!r})"
            )
        if not isinstance(node, str) or not _NODE.fullmatch(node):
            raise ValueError(f"invalid node name {node!r}")
        return self.root.joinpath(str(run_id), node, f"{attempt}.log")


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_at(path: Path, offset: int, limit: int) -> tuple[bytes, int]:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(limit)
    except FileNotFoundError:
        return b"", 0
    return data, offset + len(data)


async def _file_chunks(f: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(f.read, _COPY_CHUNK):
            yield chunk
    finally:
        f.close()


def _compacted_behind(f: BinaryIO) -> bool:
    """The file shrank below the reader's position; if so the reader moves to its end."""
    size = os.fstat(f.fileno()).st_size
    if size >= f.tell():
        return False
    f.seek(size)
    return True


#: the most one look at a followed log reads
LOOK_BYTES = 4 * MAX_LINE_BYTES


def _changed(path: Path, position: int) -> bool:
    """Whether a look at a followed log can find anything: its size is not the reader's position (something was
    appended, or the log capper cut the file behind the reader). One ``stat`` on the event loop (microseconds:
    the inode is in memory) instead of a trip to a worker thread and back for a log with nothing new — a quiet
    node's at each poll, and the whole log of a node that printed nothing (issue 18, ``aihub run``)."""
    try:
        return os.stat(path).st_size != position
    except FileNotFoundError:
        return False
    except OSError:
        return True  # (the look says what is wrong)


def _look(f: BinaryIO | None, path: Path, offset: int) -> tuple[BinaryIO | None, bytes, bool, bool, int]:
    """One look at a followed log, in a worker thread: (the file — opened at ``offset`` now if it was not yet
    and it exists —, what was appended to it, at most :data:`LOOK_BYTES`, whether the log capper cut the file
    behind the reader (which then goes on from its end), whether there may be more to read at once, the reader's
    position then)."""
    if f is None:
        f = _open_if_exists(path, offset)
        if f is None:
            return None, b"", False, False, offset
    data = f.read(LOOK_BYTES)
    if len(data) == LOOK_BYTES:
        return f, data, False, True, f.tell()
    return f, data, _compacted_behind(f), False, f.tell()


def _open_if_exists(path: Path, offset: int) -> BinaryIO | None:
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by follow()'s finally
    except FileNotFoundError:
        return None
    f.seek(offset)
    return f


class _LineSplitter:
    """Turns a byte stream into decoded lines, holding at most one partial line of bounded size."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[str]:
        lines: list[str] = []
        start = 0
        while (end := data.find(b"\n", start)) != -1:
            self._pending += data[start:end]
            lines.extend(self._cut_long())
            lines.append(_decode_line(bytes(self._pending)))
            self._pending.clear()
            start = end + 1
        self._pending += data[start:]
        lines.extend(self._cut_long())
        return lines

    def flush(self) -> list[str]:
        if not self._pending:
            return []
        line = _decode_line(bytes(self._pending))
        self._pending.clear()
        return [line]

    def _cut_long(self) -> list[str]:
        """Emit leading chunks of an over-long partial line, cut on a UTF-8 character boundary."""
        chunks = []
        while len(self._pending) > MAX_LINE_BYTES:
            cut = MAX_LINE_BYTES
            # back off over continuation bytes (0b10xxxxxx) so a character is never split in two
            while cut > MAX_LINE_BYTES - 4 and self._pending[cut] & 0xC0 == 0x80:
                cut -= 1
            chunks.append(self._pending[:cut].decode("utf-8", errors="replace"))
            del self._pending[:cut]
        return chunks


def _decode_line(raw: bytes) -> str:
    return raw.removesuffix(b"\r").decode("utf-8", errors="replace")


_TAIL_BLOCK = 64 * 1024


def _tail_lines(path: Path, count: int) -> list[str]:
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return []
    with f:
        pos = f.seek(0, os.SEEK_END)
        # Enough bytes for `count` cut lines; a longer window would only hold text we would cut away.
        window = count * (TAIL_LINE_CHARS + 1) + 1
        blocks: list[bytes] = []
        held = newlines = 0
        while pos > 0 and newlines <= count and held < window:
            step = min(_TAIL_BLOCK, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            blocks.append(block)
            held += len(block)
            newlines += block.count(b"\n")
    text = b"".join(reversed(blocks))
    text = text.removesuffix(b"\n")
    raw_lines = text.split(b"\n")
    starts_mid_line = pos > 0
    lines = raw_lines[-count:]
    cut_first = starts_mid_line and len(lines) == len(raw_lines)
    return [_cut_tail_line(raw, partial=cut_first and i == 0) for i, raw in enumerate(lines)]


def _cut_tail_line(raw: bytes, *, partial: bool) -> str:
    if len(raw) > TAIL_LINE_CHARS or partial:
        return "…" + raw[-TAIL_LINE_CHARS:].decode("utf-8", errors="replace").removesuffix("\r")
    return _decode_line(raw)


def build_storage(settings: Settings) -> tuple[ArtifactStore, LocalLogStore]:
    """The stores ``settings`` name: by default on local disk under ``settings.data_dir`` (``artifacts/`` and
    ``logs/``, directories created); with ``AIHUB_ARTIFACT_STORE=s3://…`` in that object store (attempt logs
    are still written under ``logs/`` by the attempts this process runs, and archived there when they end)."""
    if settings.artifact_store:
        from aihub.storage.s3 import S3ArtifactStore, S3Config, S3LogStore

        config = S3Config(
            settings.artifact_store,
            endpoint_url=settings.s3_endpoint_url,
            retry_seconds=settings.s3_retry_seconds,
        )
        store = S3ArtifactStore(config, settings.data_dir / "downloads")
        s3_logs = S3LogStore(settings.data_dir / "logs", store)
        s3_logs.root.mkdir(parents=True, exist_ok=True)
        return store, s3_logs
    artifacts = LocalArtifactStore(settings.data_dir / "artifacts")
    logs = LocalLogStore(settings.data_dir / "logs")
    for store in (artifacts, logs):
        store.root.mkdir(parents=True, exist_ok=True)
    return artifacts, logs
