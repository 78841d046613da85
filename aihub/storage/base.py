"""Where artifacts and logs live: a small interface that local disk (default) or a shared store implements.

Artifacts are content-addressed (sha256 of the packed archive). Logs are append-only, one file per attempt,
read by byte offset so that a 1 GB log or a 100 MB line never has to fit in memory.

Two implementations: :mod:`aihub.storage.local` (files under the data dir, the default) and
:mod:`aihub.storage.s3` (an S3-compatible object store, ``AIHUB_ARTIFACT_STORE=s3://BUCKET/PREFIX``), which
API replicas and engine workers on different machines share. Every reader verifies an artifact's sha256 as it
reads it, so a corrupt object is refused (:class:`ArtifactCorrupt`) wherever it is used.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

__all__ = [
    "ArtifactCorrupt",
    "ArtifactMissing",
    "ArtifactStore",
    "DoneCheck",
    "LogStore",
    "StoreError",
]


class StoreError(Exception):
    """The store could not do what was asked (unreachable after the retries, refused, …); says which store."""


class ArtifactMissing(KeyError):
    """The artifact asked for is not in the store; the message names the digest and the store."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "artifact missing"


class ArtifactCorrupt(StoreError):
    """The bytes read from the store do not hash to the digest they are stored under: refused."""


class ArtifactStore(Protocol):
    #: where the store is, for messages (a directory, ``s3://bucket/prefix``)
    location: str

    async def put_file(self, archive: Path) -> tuple[str, int]:
        """Move/copy a packed archive into the store (it is consumed); returns (sha256 hex digest, size).

        A digest already stored is not sent again. Nothing is visible under a digest before all its bytes are.
        """
        ...

    async def exists(self, digest: str) -> bool: ...

    def open(self, digest: str) -> AbstractAsyncContextManager[Path]:
        """A local file holding the archive, its sha256 verified, for the ``async with`` block.

        Raises :class:`ArtifactMissing` (unknown or malformed digest), :class:`ArtifactCorrupt`, :class:`StoreError`.
        """
        ...

    def stream(self, digest: str) -> AsyncIterator[bytes]:
        """The archive's bytes in chunks; the sha256 is checked at the end (:class:`ArtifactCorrupt` there)."""
        ...


class LogStore(Protocol):
    def path(self, run_id: int, node: str, attempt: int) -> Path:
        """The append-only log file of one attempt (its parent directory exists)."""
        ...

    def location(self, run_id: int, node: str, attempt: int) -> Path:
        """Where :meth:`path` is, with nothing created (no file-system call)."""
        ...

    async def read(
        self, run_id: int, node: str, attempt: int, offset: int = 0, limit: int = 65536
    ) -> tuple[bytes, int]:
        """Up to ``limit`` bytes from ``offset``; returns (data, next_offset). Missing log = (b"", 0)."""
        ...

    async def tail_lines(self, run_id: int, node: str, attempt: int, count: int) -> list[str]:
        """The last ``count`` lines (each cut to a sane length), reading only the end of the file."""
        ...

    def follow(
        self,
        run_id: int,
        node: str,
        attempt: int,
        *,
        done: DoneCheck,
        offset: int = 0,
        wake: asyncio.Event | None = None,
    ) -> AsyncIterator[str]:
        """Yield lines from ``offset`` as they are written until ``done()`` is true and the file is drained.

        Lines longer than a cap are split into chunks, so memory stays bounded. ``wake``, once set, ends the
        wait between two looks at the log at once (its setter knows ``done()`` has turned true).
        """
        ...

    async def archive(self, run_id: int, node: str, attempt: int) -> None:
        """The attempt has ended: keep its log where every replica reads it (local disk: it is already)."""
        ...


class DoneCheck(Protocol):
    async def __call__(self) -> bool: ...


async def pause(seconds: float, wake: asyncio.Event | None) -> None:
    """Wait ``seconds`` between two looks at a log, or less: until ``wake`` is set."""
    if wake is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await wake.wait()
