"""Clean-up of the container executor's ended attempts, in batches.

Clean-ups run ``CLEAN_DELAY`` seconds after the first of a batch ended: one ``inspect`` and one ``rm`` for all
of them, so the engine's CLI does not compete with the next nodes' starts once per node (on two cores that
was a third of a node's time). The inspect data is kept in the attempt's scratch dir (the container tab's);
the engine keeps the events of removed containers (the events tab asks it when shown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any

from aihub.engine.executors.base import write_json
from aihub.engine.executors.container_cli import EngineCli

__all__ = ["CGROUP_ROOT", "CLEAN_DELAY", "Cleaner"]

log = logging.getLogger("aihub.engine.executors.container")

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: seconds an ended container waits for others to be cleaned up with it (one inspect and one rm per batch)
CLEAN_DELAY = 2.0

#: container name -> (the attempt's handle data, its inspect data if read already)
_Batch = dict[str, tuple[dict[str, Any], dict[str, Any] | None]]


class Cleaner:
    """Removes ended containers (unless kept), their cgroup parents and workflow spaces, in batches."""

    def __init__(self, engine: EngineCli, *, keep_containers: bool) -> None:
        self.engine = engine
        self.keep_containers = keep_containers
        self._pending: _Batch = {}
        self._task: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()  # settle(): clean up now, without the batching delay

    def later(self, data: dict[str, Any], state: dict[str, Any] | None) -> None:
        """Queue an ended attempt's clean-up (``state``: its inspect data, if read already)."""
        self._pending[data["container"]] = (data, state)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._batches(), name="remove ended containers")

    async def settle(self) -> None:
        """Clean up every ended container now and wait for it (tests, shutdown)."""
        self._hurry.set()
        try:
            while self._task is not None and not self._task.done():
                await asyncio.gather(self._task, return_exceptions=True)
        finally:
            self._hurry.clear()

    async def _batches(self) -> None:
        while self._pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), CLEAN_DELAY)
            batch, self._pending = self._pending, {}
            await self._clean(batch)

    async def _clean(self, batch: _Batch) -> None:
        """Keep the inspect data, remove the containers, their cgroup parents and workflow spaces."""
        try:
            await self._keep_inspect_data(batch)
            if not self.keep_containers:
                await self.engine.remove(*batch, within=300)
            for data, _ in batch.values():
                if data.get("cgroup_parent"):
                    await asyncio.to_thread(_remove_cgroup, data["cgroup_parent"])
                await asyncio.to_thread(shutil.rmtree, Path(data["scratch"]) / "workflow_space", True)
        except Exception:  # cleaning is best effort; the reports are saved already
            log.exception("container executor: cleaning up %s failed", ", ".join(batch))

    async def _keep_inspect_data(self, batch: _Batch) -> None:
        inspected = await self.engine.inspect_many(
            [name for name, (_, state) in batch.items() if state is None]
        )
        for name, (data, state) in batch.items():
            state = state or inspected.get(name)
            if state is not None:
                await asyncio.to_thread(write_json, Path(data["scratch"]) / "inspect.json", state)


def _remove_cgroup(parent: str) -> None:
    """rmdir the attempt's cgroup parent (and the ``conmon`` group podman made in it) in every hierarchy."""
    rel = parent.lstrip("/")
    with contextlib.suppress(OSError):
        for hierarchy in CGROUP_ROOT.iterdir():
            base = hierarchy / rel
            if not base.is_dir():
                continue
            for sub in sorted(base.glob("**/"), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    sub.rmdir()
