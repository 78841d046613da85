"""The run loop: start nodes whose parents succeeded, as cluster capacity allows; follow them to the end.

``Engine`` keeps the loop — listen for run events, advance a run (queue what is ready, dispatch, finish the run
when nothing is left), stop runs — and hands the rest to its parts:

- ``engine/policies.py``  the rules, as pure functions (what an attempt's end leads to, how a run ends, ...)
- ``engine/recovery.py``  activation, recovery after a restart or a Kafka assignment, re-attaching, letting go
- ``engine/dispatch.py``  cluster pools, one FIFO queue per cluster with backfill, the shared capacity ledger
- ``engine/attempts.py``  one attempt: job, cache, launch, follow, record the end
- ``engine/state.py``     ``RunState``, rebuilt from the database; ``engine/jobs.py`` the executor's ``Job``

In memory the engine keeps, per active run, how many parents of each node are still unfinished, so a hand-off
from a parent to its children costs O(children), whatever the size of the run. Every status change goes
through ``aihub.services.status`` (persisted first, then published). The engine never holds a database
transaction across an await on the executor.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aihub.bus.base import Bus, RunEvent, SubscriberTooSlow
from aihub.domain.handover import HANDOVER
from aihub.domain.status import NodeStatus, RunStatus
from aihub.engine import policies
from aihub.engine.attempts import Attempts, let_go_deadline
from aihub.engine.capacity import Capacity
from aihub.engine.dispatch import Dispatcher
from aihub.engine.executors.base import Executor, Handle
from aihub.engine.recovery import Recovery
from aihub.engine.state import Running, RunState
from aihub.logs import node_var, run_id_var
from aihub.metrics import Metrics
from aihub.services.status import transition_node, transition_run
from aihub.services.tokens import revoke_run_tokens
from aihub.settings import Settings

__all__ = ["Engine", "RunState", "Running"]

log = logging.getLogger("aihub.engine")


class Engine:
    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        executor: Executor,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.executor = executor
        self.metrics = metrics if metrics is not None else Metrics()
        self.runs: dict[int, RunState] = {}
        #: called with (run id, node, attempt number) when an attempt has ended, before its status is written
        #: (the log capper's last look at the attempt's log)
        self.attempt_ended: list[Callable[[int, str, int], Awaitable[None]]] = []
        #: awaited with the revoked partitions at each rebalance of the engine group, after the runs of those
        #: partitions were let go (the module builds of those partitions are let go too)
        self.partitions_revoked: list[Callable[[frozenset[int]], Awaitable[None]]] = []
        self.dispatcher = Dispatcher(self)
        self.attempts = Attempts(self)
        self.recovery = Recovery(self)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subscription = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._handed_over = False  # this engine takes create_run's parses (``aihub.domain.handover``)

    @property
    def capacity(self) -> Capacity:
        return self.dispatcher.capacity

    async def load_pools(self) -> None:
        """(Re)read the clusters' sizes (``Dispatcher.load_pools``)."""
        await self.dispatcher.load_pools()

    def queued_by_cluster(self) -> dict[str, int]:
        """How many ready nodes wait for each virtual cluster's capacity now (``/metrics``)."""
        return self.dispatcher.queued_by_cluster()

    async def activate(self, run_id: int) -> None:
        """Take the run up (``Recovery.activate``): its state from the database, then drive it."""
        await self.recovery.activate(run_id)

    # ----------------------------------------------------------------- lifecycle
    async def start(self, *, recover: bool = True) -> None:
        """Probe the executor, load cluster pools, listen for run events, and (``recover``) resume every
        active run of the database. The embedded ``aihub run`` does not recover: a server may own them."""
        self.dispatcher.closed = False
        if not self._handed_over:  # create_run in this process leaves its parse for this engine
            HANDOVER.open()
            self._handed_over = True
        probe = getattr(self.executor, "probe", None)
        if probe is not None:
            await probe()
        await self.load_pools()
        self._subscription = self.bus.subscribe(None, runs_only=True)
        self.spawn(self._listen(), "bus listener")
        if not recover:
            return
        join = getattr(self.bus, "join_engine_group", None)
        if join is not None:
            # several engine workers: each drives the runs of the bus partitions it is assigned, and
            # recovery happens per assignment (the first one included)
            recovery = self.recovery
            await join(recovery.on_assign, recovery.on_revoke, timing=self._group_timing())
            return
        await self.recovery.recover(lambda run_id: True)

    def _owns(self, run_id: int) -> bool:
        owns = getattr(self.bus, "owns", None)
        return owns is None or owns(run_id)

    def _group_timing(self) -> Any:
        from aihub.bus.kafka import GroupTiming

        s = self.settings
        return GroupTiming(
            session_timeout_ms=s.kafka_session_timeout_ms,
            heartbeat_interval_ms=s.kafka_heartbeat_interval_ms,
            rebalance_timeout_ms=s.kafka_rebalance_timeout_ms,
        )

    async def close(self) -> None:
        """Stop following runs; running nodes keep running and are re-attached on the next start."""
        self.dispatcher.close()
        if self._handed_over:
            HANDOVER.close()
            self._handed_over = False
        if self._subscription is not None:
            self._subscription.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        deadline = let_go_deadline()
        for state in list(self.runs.values()):  # (the next start finds them written)
            await self.attempts.write_held_starts(state, deadline)
        await self.executor.close()

    def spawn(
        self,
        coro: Any,
        what: str,
        state: RunState | None = None,
        *,
        run_id: int | None = None,
        node: str | None = None,
    ) -> asyncio.Task[Any]:
        """A task of the engine; its log lines carry the run id (``state``'s or ``run_id``) and ``node``."""
        context = contextvars.copy_context()
        context.run(run_id_var.set, state.run.id if state is not None else run_id)
        context.run(node_var.set, node)
        task = asyncio.create_task(coro, name=what, context=context)
        self._tasks.add(task)
        if state is not None:  # so a run can be let go (another worker takes it over)
            state.tasks.add(task)
            task.add_done_callback(state.tasks.discard)
        self._idle.clear()
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("engine task %s failed", task.get_name(), exc_info=task.exception())
        if not self._tasks or all(t.get_name() == "bus listener" for t in self._tasks):
            self._idle.set()

    async def _listen(self) -> None:
        """Follow run-level events. If this listener ever falls behind (a burst of node events, e.g. a
        retry resetting thousands of nodes), it resubscribes and reconciles from the database instead of
        dying: the engine is level-triggered, so nothing is lost."""
        while True:
            assert self._subscription is not None
            try:
                async for event in self._subscription:  # run-level events only
                    self._on_run_event(event)
            except SubscriberTooSlow:
                log.warning("engine fell behind the event bus; reconciling from the database")
                self._subscription = self.bus.subscribe(None, runs_only=True)
                await self.recovery.recover(self._owns)

    def _on_run_event(self, event: RunEvent) -> None:
        if not self._owns(event.run_id):
            return
        run_id = event.run_id
        if event.run_status == RunStatus.PENDING and run_id not in self.runs:
            self.spawn(self.activate(run_id), f"activate run {run_id}", run_id=run_id)
        elif event.run_status == RunStatus.STOPPING:
            state = self.runs.get(run_id)
            if state is not None:
                self.spawn(self.stop(state), f"stop run {run_id}", state)
            elif run_id not in self.recovery.activating:
                self.spawn(self.activate(run_id), f"activate run {run_id}", run_id=run_id)

    # ----------------------------------------------------------------- the loop
    async def advance(self, state: RunState) -> None:
        """Queue every node that may start now, dispatch, and finish the run when nothing is left."""
        if state.finished:
            return
        if not state.stopping and state.failed_node is None:
            while state.ready:
                name = next(iter(state.ready))
                del state.ready[name]
                if self._may_queue(state, name):
                    await self._enqueue(state, name)
        self.dispatcher.dispatch()
        await self._maybe_finish(state)

    def _may_queue(self, state: RunState, name: str) -> bool:
        node = state.nodes[name]
        return node.status is NodeStatus.WAITING and name not in state.running and name not in state.queued

    def start_early(self, state: RunState, names: list[str]) -> None:
        """Queue and dispatch the ready ``names`` that can start, while the end of the parent that made them
        ready is still being written (``Attempts._record_success``): their launch overlaps that write, and each
        records its start once the run's lock is free, after the parent's end. Only where this engine alone
        moves the run's nodes (no shared capacity: no other worker); nodes that can never start stay ready and
        fail in ``advance``, after the parent's end, as before."""
        if self.settings.shares_capacity or state.stopping or state.failed_node is not None:
            return
        for name in names:
            spec = state.spec.node(name)
            if (
                name in state.ready
                and self._may_queue(state, name)
                and self.dispatcher.unstartable(spec) is None
            ):
                del state.ready[name]
                self.dispatcher.enqueue(state, name)
        self.dispatcher.dispatch()

    async def _enqueue(self, state: RunState, name: str) -> None:
        reason = self.dispatcher.unstartable(state.spec.node(name))
        if reason is not None:
            await self._fail_unstarted(state, name, reason)
        else:
            self.dispatcher.enqueue(state, name)

    async def fail_and_advance(self, state: RunState, name: str, message: str) -> None:
        """A node that never got to run fails (no attempt), then the run moves on."""
        async with state.lock:
            await self._fail_unstarted(state, name, message)
        await self.advance(state)

    async def _fail_unstarted(self, state: RunState, name: str, message: str) -> None:
        """A node that cannot start at all: WAITING -> FAILED, without an attempt (it never ran)."""
        node = state.nodes[name]
        await transition_node(self.bus, state.run, node, NodeStatus.FAILED, kind="failed", message=message)
        state.fail_fast(name)

    async def _maybe_finish(self, state: RunState) -> None:
        if state.busy:
            # the run goes on (policies.run_outcome says so too), without waiting for the run's lock behind
            # another node's write: every way a run stops being busy (a node's end released, the queue cleared
            # by a stop or a failure, a refused claim) is followed by an advance, which looks again
            return
        async with state.lock:
            if state.finished:
                return
            run = state.run
            statuses = (n.status for n in state.nodes.values())
            ending = policies.run_outcome(
                stopping=state.stopping, failed_node=state.failed_node, busy=state.busy, statuses=statuses
            )
            if ending is None:
                return  # nodes run, or more became ready in the meantime
            await self._end_run(state, ending)
            self.metrics.runs.labels(run.status.value).inc()
            log.info("run %s finished %s", run.id, run.status.value, extra={"run_id": run.id, "node": None})
            state.finished = True
            self.runs.pop(run.id, None)
        await revoke_run_tokens(run.id)

    async def _end_run(self, state: RunState, ending: RunStatus) -> None:
        run = state.run
        if ending is RunStatus.STOPPED:
            await self._close_waiting(state, NodeStatus.STOPPED, "stopped", "stopped by user")
            await transition_run(self.bus, run, RunStatus.STOPPED, message=run.message or "stopped")
        elif ending is RunStatus.FAILED:
            node = state.nodes[state.failed_node]  # type: ignore[index]
            # never started: say so, not WAITING for ever
            await self._close_waiting(
                state, NodeStatus.SKIPPED, "not_run", f"not run: node {node.name!r} failed"
            )
            message = f"node {node.name!r} failed: {node.message}"
            await transition_run(self.bus, run, RunStatus.FAILED, message=message)
        else:
            await transition_run(self.bus, run, RunStatus.SUCCEEDED, message="all nodes succeeded")

    async def _close_waiting(self, state: RunState, target: NodeStatus, kind: str, message: str) -> None:
        """The run ends: every node still WAITING moves to ``target``."""
        for node in state.nodes.values():
            if node.status is NodeStatus.WAITING:
                await transition_node(self.bus, state.run, node, target, kind=kind, message=message)

    async def stop(self, state: RunState) -> None:
        async with state.lock:
            state.stopping = True
            state.queued.clear()
            state.queued_at.clear()
            await state.run.refresh_from_db(fields=["status", "message"])  # the stop request wrote it
            handles = [r.handle for r in state.running.values() if r.handle is not None]
        await asyncio.gather(
            *(self.executor.stop(h, self.settings.stop_grace_seconds) for h in handles),
            return_exceptions=True,
        )
        await self.advance(state)

    # ----------------------------------------------------------------- helpers for tests and tools
    async def wait_idle(self) -> None:
        """Wait until no engine task is running (tests)."""
        while True:
            await self._idle.wait()
            await asyncio.sleep(0)
            if self._idle.is_set():
                return

    # ----------------------------------------------------------------- the services' AttemptViews
    async def describe(self, handle: dict[str, Any]) -> dict[str, Any]:
        """The executor's view of the attempt with this handle (the attempt's ``handle`` JSON)."""
        return await self.executor.describe(Handle.from_json(handle))

    async def executor_events(self, handle: dict[str, Any]) -> list[dict[str, Any]]:
        """The executor's own events of an attempt: Kubernetes events of its pod ([] for local nodes)."""
        return await self.executor.events(Handle.from_json(handle))
