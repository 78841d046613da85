"""Taking runs up: activation (state rebuilt from the database), recovery after a restart or a Kafka
assignment, re-attaching to attempts that outlived the server, and letting go of revoked runs.

Level-triggered and idempotent: ``activate(run_id)`` rebuilds a run's state from the database and from what the
executor still knows, then hands it to the loop; running it again gives the same state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from aihub.db.models import Attempt, Run, TokenKind
from aihub.domain.status import NodeStatus, RunStatus
from aihub.engine.attempts import let_go_deadline
from aihub.engine.executors.base import Handle, JobKey
from aihub.engine.state import RunState, load_run_state
from aihub.services.status import StaleStatus, transition_run
from aihub.services.tokens import issue_token

if TYPE_CHECKING:
    from aihub.engine.scheduler import Engine

#: the run statuses an engine drives
ACTIVE = [RunStatus.PENDING, RunStatus.RUNNING, RunStatus.STOPPING]


class Recovery:
    """Activation and recovery of the runs of one ``Engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.activating: set[int] = set()

    async def recover(self, owned: Callable[[int], bool]) -> None:
        """Resume every active run of the database that this worker owns."""
        for run_id in await Run.filter(status__in=ACTIVE).values_list("id", flat=True):
            if owned(run_id):
                self.engine.spawn(self.activate(run_id), f"recover run {run_id}", run_id=run_id)

    async def on_assign(self, partitions: frozenset[int]) -> None:
        bus = self.engine.bus
        await self.recover(lambda run_id: bus.partition_for(run_id) in partitions)  # type: ignore[attr-defined]

    async def on_revoke(self, partitions: frozenset[int]) -> None:
        """Another worker takes these runs over: stop following them (their nodes keep running)."""
        deadline = let_go_deadline()
        for run_id, state in list(self.engine.runs.items()):
            if self.engine.bus.partition_for(run_id) in partitions:  # type: ignore[attr-defined]
                await self._let_go(state, deadline)
        for hook in self.engine.partitions_revoked:
            await hook(partitions)

    async def _let_go(self, state: RunState, deadline: float) -> None:
        self.engine.runs.pop(state.run.id, None)
        state.finished = True
        state.queued.clear()
        state.queued_at.clear()
        tasks = list(state.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.engine.attempts.write_held_starts(state, deadline)  # (before the next owner reads the run)
        for name in list(state.running):
            self.engine.dispatcher.release(
                state, name, claim=False
            )  # still running: the new owner keeps the claim

    async def activate(self, run_id: int) -> None:
        engine = self.engine
        if run_id in engine.runs or run_id in self.activating:
            return
        self.activating.add(run_id)
        try:
            state = await load_run_state(run_id)
            if state is None:
                return
            # one query per run: cluster changes made through any interface (API, web pages) apply from the
            # next run on, and a cluster created since the engine started is known
            await engine.load_pools()
            if not await self._take_up(state):
                return
            if state.stopping:
                await engine.stop(state)
            else:
                await engine.advance(state)
        finally:
            self.activating.discard(run_id)

    async def _take_up(self, state: RunState) -> bool:
        """The run becomes RUNNING (False: it was stopped before it started), gets its token, and what still
        runs is followed again."""
        async with state.lock:
            if state.run.status is RunStatus.PENDING:
                try:
                    await transition_run(self.engine.bus, state.run, RunStatus.RUNNING, message="started")
                except StaleStatus:  # stopped before it started
                    return False
            self.engine.runs[state.run.id] = state
            owner = state.run.owner_id  # type: ignore[attr-defined]
            state.token, _ = await issue_token(owner, TokenKind.RUN, name="run", run_id=state.run.id)
            await self._reattach(state)
            # a stop requested while we were activating was not seen by the listener: look again
            await state.run.refresh_from_db(fields=["status", "message"])
            if state.run.status is RunStatus.STOPPING:
                state.stopping = True
        return True

    async def _reattach(self, state: RunState) -> None:
        """After a restart: follow attempts that are still running, or that started but were not recorded."""
        executor = self.engine.executor
        for name, node in state.nodes.items():
            if node.status is NodeStatus.RUNNING:
                attempt = await Attempt.get_or_none(node_run_id=node.id, number=node.attempt)
                handle = Handle.from_json(attempt.handle) if attempt and attempt.handle else None
                if handle is None:
                    handle = await executor.find(JobKey(state.run.id, name, node.attempt))
                await self._follow(state, name, attempt, handle)
            elif node.status is NodeStatus.WAITING and state.blocked[name] == 0:
                handle = await executor.find(JobKey(state.run.id, name, node.attempt + 1))
                if handle is not None:
                    attempt = await self.engine.attempts.record_start(state, name, handle)
                    await self._follow(state, name, attempt, handle)

    async def _follow(
        self, state: RunState, name: str, attempt: Attempt | None, handle: Handle | None
    ) -> None:
        await self.engine.dispatcher.hold(state, name, handle, attempt)
        watch = self.engine.attempts.watch(state, name)
        self.engine.spawn(watch, f"watch {state.run.id}/{name}", state, node=name)
