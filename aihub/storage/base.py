"""Where artifacts and logs live: a small interface that local disk (default) or a shared store implements.

Artifacts are content-addressed (sha256 of the packed archive). Logs are append-only, one file per attempt,
read by byte offset so that a 1 GB log or a 100 MB line never has to fit in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol


class ArtifactStore(Protocol):
    async def put_file(self, archive: Path) -> tuple[str, int]:
        """Move/copy a packed archive into the store; returns (sha256 hex digest, size in bytes)."""
        ...

    def path(self, digest: str) -> Path:
        """Local path of a stored archive (raises KeyError for an unknown or malformed digest)."""
        ...

    async def exists(self, digest: str) -> bool: ...


class LogStore(Protocol):
    def path(self, run_id: int, node: str, attempt: int) -> Path:
        """The append-only log file of one attempt (its parent directory exists)."""
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
        self, run_id: int, node: str, attempt: int, *, done: DoneCheck, offset: int = 0
    ) -> AsyncIterator[str]:
        """Yield lines from ``offset`` as they are written until ``done()`` is true and the file is drained.

        Lines longer than a cap are split into chunks, so memory stays bounded.
        """
        ...


class DoneCheck(Protocol):
    async def __call__(self) -> bool: ...
