"""The executor protocol: how the engine runs one attempt of one node somewhere.

Executors report facts (started, exited with a code, outputs collected, logs written); they never decide
what happens next — the scheduler does. A handle is plain JSON so it can be stored on the attempt row and
used again after a server restart (``find`` re-attaches to a job that was started before).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from aihub.domain.resources import Resources

OutputType = Literal["text", "path"]


@dataclass(frozen=True)
class JobKey:
    run_id: int
    node: str
    attempt: int

    @property
    def slug(self) -> str:
        return f"r{self.run_id}-{self.node}-a{self.attempt}"


@dataclass(frozen=True)
class OutputDecl:
    name: str
    path: str  # absolute path inside the node's filesystem
    type: OutputType


@dataclass(frozen=True)
class ArtifactInput:
    """A packed ``path`` output of an ancestor to unpack at the same absolute path before start."""

    name: str
    path: str
    digest: str


@dataclass(frozen=True)
class StorageMount:
    name: str
    path: str  # where the node sees it
    host_path: str = ""  # local executor: the directory bound at ``path`` ("" = same as path)
    volume: dict[str, Any] = field(default_factory=dict)  # kubernetes volume source
    read_only: bool = False


@dataclass(frozen=True)
class Job:
    key: JobKey
    argv: list[str]  # plain node: ["sh", "-c", command]; module node: entrypoint + --name=value
    env: dict[str, str]
    image: str = ""
    workdir: str = ""  # "" = the scratch dir (local) / image default (kubernetes)
    artifacts_in: list[ArtifactInput] = field(default_factory=list)
    outputs: list[OutputDecl] = field(default_factory=list)
    storages: list[StorageMount] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)
    labels: dict[str, str] = field(default_factory=dict)
    max_text_output: int = 1000


@dataclass
class Handle:
    executor: str
    id: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"executor": self.executor, "id": self.id, "data": self.data}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Handle:
        return cls(executor=raw["executor"], id=raw["id"], data=dict(raw.get("data") or {}))


@dataclass(frozen=True)
class OutputValue:
    """A collected output: ``value`` is the text, or for ``path`` outputs the absolute path."""

    name: str
    type: OutputType
    value: str
    digest: str | None = None  # sha256 of the packed archive (path outputs)
    size: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "value": self.value, "digest": self.digest, "size": self.size}


@dataclass
class ExitReport:
    """How an attempt ended. It succeeded when ``exit_code == 0`` and ``error`` is None."""

    exit_code: int | None
    outputs: dict[str, OutputValue] = field(default_factory=dict)
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    stopped: bool = False  # ended because stop() was called

    def __post_init__(self) -> None:
        # The end is often read from a clock coarser than the start's (a file's mtime is the kernel's coarse
        # clock, a 4 ms tick here; Kubernetes gives whole seconds): a node that ran for less than a tick would
        # seem to end before it started, and show a negative duration.
        if (
            self.started_at is not None
            and self.finished_at is not None
            and self.finished_at < self.started_at
        ):
            self.finished_at = self.started_at

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error is None and not self.stopped

    def to_json(self) -> dict[str, Any]:
        """What an executor saves so that a ``wait`` after a restart gives the same report."""
        return {
            "exit_code": self.exit_code,
            "error": self.error,
            "stopped": self.stopped,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "outputs": {name: {"name": name, **value.to_json()} for name, value in self.outputs.items()},
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ExitReport:
        def when(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        return cls(
            exit_code=raw["exit_code"],
            error=raw["error"],
            stopped=raw["stopped"],
            started_at=when(raw["started_at"]),
            finished_at=when(raw["finished_at"]),
            outputs={name: OutputValue(**value) for name, value in raw["outputs"].items()},
        )


class Executor(Protocol):
    name: str

    async def start(self, job: Job) -> Handle:
        """Launch the attempt; returns once it is running (or has already failed to launch)."""
        ...

    async def find(self, key: JobKey) -> Handle | None:
        """Re-attach after a restart to an attempt started earlier, or None if it never started."""
        ...

    async def wait(self, handle: Handle) -> ExitReport:
        """Return when the attempt has ended, with its exit code and collected outputs."""
        ...

    async def stop(self, handle: Handle, grace: float) -> None:
        """SIGTERM (pod delete), then SIGKILL after ``grace`` seconds; wait() then reports stopped."""
        ...

    async def describe(self, handle: Handle) -> dict[str, Any]:
        """The container tab: process/pod, image, host, resources, state, isolation."""
        ...

    async def events(self, handle: Handle) -> list[dict[str, Any]]:
        """Executor-side events of the attempt (Kubernetes events of the pod; [] for local)."""
        ...

    async def close(self) -> None: ...


class SharedWaits:
    """One follower task per attempt however many callers wait on it; a caller's cancellation leaves it
    running for the others. Executors use it to implement ``wait``."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[ExitReport]] = {}

    async def wait(self, key: str, follow: Callable[[], Coroutine[Any, Any, ExitReport]]) -> ExitReport:
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.create_task(follow(), name=f"wait {key}")
            self._tasks[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(task)

    def _forget(self, key: str, task: asyncio.Task[ExitReport]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]

    async def cancel(self) -> None:
        """Stop following every attempt (the attempts themselves keep running)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Writes ``data`` to ``path`` atomically (a reader sees the old file or the new one, never half)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing or not JSON."""
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None
