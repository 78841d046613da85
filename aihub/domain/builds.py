"""What a module build is asked to do and what it produced, and where builds are recorded: the value types the
services (which record builds) and the engine's build manager (which runs them) share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["BuildJob", "BuildOutcome", "BuildStore"]


@dataclass(frozen=True)
class BuildJob:
    build_id: int
    module: str
    category: str
    git_url: str
    ref: str
    dockerfile_path: str
    build_context: str
    readme_path: str
    #: the build's number among its module's builds (what the module page shows); 0: not known
    number: int = 0


@dataclass(frozen=True)
class BuildOutcome:
    """What a build produced; ``error`` set means BUILD_FAILED (the other fields hold what was known)."""

    error: str | None = None
    commit_sha: str = ""
    image: str = ""
    entrypoint: tuple[str, ...] = ()
    workdir: str = ""
    context_path: str = ""
    readme: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


class BuildStore(Protocol):
    async def load(self, build_id: int) -> BuildJob | None:
        """The job of a build that is still BUILDING, else None."""
        ...

    async def finish(self, build_id: int, outcome: BuildOutcome) -> None: ...

    async def pending(self) -> list[int]:
        """Builds left BUILDING (e.g. by a restart), oldest first."""
        ...
