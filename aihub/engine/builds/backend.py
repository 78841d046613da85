"""What a build backend is: given a checked checkout, produce something the executors can run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from aihub.engine.builds.dockerfile import DockerfileInfo

if TYPE_CHECKING:
    from aihub.engine.builds.manager import BuildJob

__all__ = ["BuildBackend", "BuiltImage"]


@dataclass(frozen=True)
class BuiltImage:
    """How executors run the result: ``entrypoint`` in ``workdir``; ``context_path`` a host directory to
    mount (local backend only, else empty)."""

    entrypoint: tuple[str, ...]
    workdir: str
    context_path: str = ""


class BuildBackend(Protocol):
    name: str

    async def produce(
        self,
        job: BuildJob,
        *,
        sha: str,
        image: str,
        info: DockerfileInfo,
        context: Path,
        log: Callable[[str], None],
    ) -> BuiltImage:
        """Build ``job`` at commit ``sha`` (already checked out at ``context``, Dockerfile parsed into ``info``);
        raise :class:`aihub.engine.builds.local.BuildFailure` with a message the author understands."""
        ...

    async def close(self) -> None: ...
