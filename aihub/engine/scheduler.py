"""The run loop: start nodes whose parents succeeded, as cluster capacity allows; follow them to the end.

Level-triggered and idempotent: ``activate(run_id)`` rebuilds a run's state from the database and from what
the executor still knows (re-attaching to attempts that outlived a server restart), then drives it. In
memory the engine keeps, per active run, how many parents of each node are still unfinished, so a hand-off
from a parent to its children costs O(children), whatever the size of the run.

Every status change goes through ``aihub.services.status`` (persisted first, then published). The engine
never holds a database transaction across an await on the executor.

Capacity is counted in memory (``engine/capacity.py``), the fast path. With several engine workers
(``Settings.shares_capacity``) a node that fits in memory must also be granted a claim in the shared ledger
(``aihub.services.capacity``) before it starts; when another worker holds the room, the node goes back to the
front of its queue and its pool rests for ``SHARED_RETRY_DELAY`` before the next try. The built-in ``local``
cluster is this host's CPUs, so it is never shared.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aihub.bus.base import Bus, RunEvent, SubscriberTooSlow
from aihub.db.models import (
    Attempt,
    DataStorage,
    ModuleBuild,
    NodeRun,
    Run,
    TokenKind,
    VirtualCluster,
)
from aihub.domain.spec import NodeSpec, OutputDecl, WorkflowSpec, parse_spec
from aihub.domain.status import NodeStatus, RunStatus
from aihub.engine import policies
from aihub.engine.capacity import MONITOR, Capacity, Pool, Sku, local_pool
from aihub.engine.executors.base import (
    Executor,
    ExitReport,
    Handle,
    Job,
    JobKey,
    Resources,
    StorageMount,
)
from aihub.engine.executors.base import OutputDecl as JobOutput
from aihub.engine.params import InputError, build_env, cache_key, injected_env, module_argv, resolve_inputs
from aihub.logs import node_var, run_id_var
from aihub.metrics import Metrics
from aihub.services import capacity as ledger
from aihub.services.status import StaleStatus, transition_node, transition_run, utcnow
from aihub.services.tokens import issue_token, revoke_run_tokens
from aihub.settings import Settings

log = logging.getLogger("aihub.engine")

#: how many queued nodes that do not fit may be passed over to start smaller ones behind them
BACKFILL_WINDOW = 64
#: seconds a pool rests after the shared ledger refused one of its nodes (other workers hold the room)
SHARED_RETRY_DELAY = 1.0


@dataclass
class Running:
    lease: Resources
    pool: Pool
    handle: Handle | None = None
    attempt: Attempt | None = None


@dataclass
class RunState:
    run: Run
    spec: WorkflowSpec
    nodes: dict[str, NodeRun]
    parents: dict[str, list[str]]
    children: dict[str, list[str]]
    blocked: dict[str, int]
    builds: dict[str, ModuleBuild]
    storages: dict[str, DataStorage]
    token: str = ""
    running: dict[str, Running] = field(default_factory=dict)
    queued: set[str] = field(default_factory=set)
    #: when each queued node was queued (``time.monotonic``), for the queue-wait histogram
    queued_at: dict[str, float] = field(default_factory=dict)
    #: when the engine saw the last parent of each ready node succeed (``time.monotonic``): hand-off latency
    ready_since: dict[str, float] = field(default_factory=dict)
    #: WAITING nodes whose parents have all succeeded (candidates to queue); kept incrementally so a
    #: hand-off costs O(children), not O(nodes)
    ready: dict[str, None] = field(default_factory=dict)
    failed_node: str | None = None
    stopping: bool = False
    finished: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def busy(self) -> bool:
        return bool(self.running or self.queued)


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
        self.capacity = Capacity([])
        self.runs: dict[int, RunState] = {}
        #: called with (run id, node, attempt number) when an attempt has ended, before its status is written
        #: (the log capper's last look at the attempt's log)
        self.attempt_ended: list[Callable[[int, str, int], Awaitable[None]]] = []
        #: awaited with the revoked partitions at each rebalance of the engine group, after the runs of those
        #: partitions were let go (the module builds of those partitions are let go too)
        self.partitions_revoked: list[Callable[[frozenset[int]], Awaitable[None]]] = []
        self._waiting: dict[str, deque[tuple[int, str]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._activating: set[int] = set()
        self._subscription = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._shared = settings.shares_capacity
        #: pools the shared ledger refused: skipped by ``_dispatch`` until their timer fires
        self._resting: dict[str, asyncio.TimerHandle] = {}
        #: claims being released, so a node's next claim waits for the release of its previous one
        self._releasing: dict[tuple[int, str], asyncio.Task[Any]] = {}
        self._closed = False

    # ----------------------------------------------------------------- lifecycle
    async def start(self, *, recover: bool = True) -> None:
        """Probe the executor, load cluster pools, listen for run events, and (``recover``) resume every
        active run of the database. The embedded ``aihub run`` does not recover: a server may own them."""
        self._closed = False
        probe = getattr(self.executor, "probe", None)
        if probe is not None:
            await probe()
        await self.load_pools()
        self._subscription = self.bus.subscribe(None)
        self._spawn(self._listen(), "bus listener")
        if not recover:
            return
        join = getattr(self.bus, "join_engine_group", None)
        if join is not None:
            # several engine workers: each drives the runs of the bus partitions it is assigned, and
            # recovery happens per assignment (the first one included)
            await join(self._on_assign, self._on_revoke, timing=self._group_timing())
            return
        await self._recover(lambda run_id: True)

    async def _recover(self, owned: Callable[[int], bool]) -> None:
        """Resume every active run of the database that this worker owns."""
        for run_id in await Run.filter(
            status__in=[RunStatus.PENDING, RunStatus.RUNNING, RunStatus.STOPPING]
        ).values_list("id", flat=True):
            if owned(run_id):
                self._spawn(self.activate(run_id), f"recover run {run_id}", run_id=run_id)

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

    async def _on_assign(self, partitions: frozenset[int]) -> None:
        await self._recover(lambda run_id: self.bus.partition_for(run_id) in partitions)  # type: ignore[attr-defined]

    async def _on_revoke(self, partitions: frozenset[int]) -> None:
        """Another worker takes these runs over: stop following them (their nodes keep running)."""
        for run_id, state in list(self.runs.items()):
            if self.bus.partition_for(run_id) in partitions:  # type: ignore[attr-defined]
                await self._let_go(state)
        for hook in self.partitions_revoked:
            await hook(partitions)

    async def _let_go(self, state: RunState) -> None:
        self.runs.pop(state.run.id, None)
        state.finished = True
        state.queued.clear()
        state.queued_at.clear()
        tasks = list(state.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for name in list(state.running):
            self._release(state, name, claim=False)  # still running: the new owner keeps the claim

    async def close(self) -> None:
        """Stop following runs; running nodes keep running and are re-attached on the next start."""
        self._closed = True
        for timer in self._resting.values():
            timer.cancel()
        self._resting.clear()
        if self._subscription is not None:
            self._subscription.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.executor.close()

    async def load_pools(self) -> None:
        """(Re)read the clusters' sizes. Pools are updated in place, never replaced, so the reservations of
        running nodes stay counted (and a GPU is never handed out twice: one host list for every pool)."""
        s = self.settings
        fresh = local_pool(s.local_cpus, s.local_memory_mib, s.local_gpus)
        pools = self.capacity.pools
        local = pools.setdefault("local", fresh)
        local.sku, local.capacity = fresh.sku, fresh.capacity
        clusters = await VirtualCluster.all()
        for gone in set(pools) - {"local", *(vc.name for vc in clusters)}:
            del pools[gone]  # deleted: running nodes keep their own reference to release it
        for vc in clusters:
            sku = Sku(vc.cpu_millis, vc.memory_mib, vc.gpu, vc.gpu_type)
            pool = pools.get(vc.name)
            if pool is None:
                pool = pools[vc.name] = Pool(
                    name=vc.name, sku=sku, capacity=vc.capacity, gpu_devices=local.gpu_devices
                )
            pool.sku, pool.capacity, pool.node_selector = sku, vc.capacity, dict(vc.node_selector or {})

    def _spawn(
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
                async for event in self._subscription:
                    if event.node is None:
                        self._on_run_event(event)
            except SubscriberTooSlow:
                log.warning("engine fell behind the event bus; reconciling from the database")
                self._subscription = self.bus.subscribe(None)
                await self._recover(self._owns)

    def _on_run_event(self, event: RunEvent) -> None:
        if not self._owns(event.run_id):
            return
        if event.run_status == RunStatus.PENDING and event.run_id not in self.runs:
            self._spawn(self.activate(event.run_id), f"activate run {event.run_id}", run_id=event.run_id)
        elif event.run_status == RunStatus.STOPPING:
            state = self.runs.get(event.run_id)
            if state is not None:
                self._spawn(self._stop(state), f"stop run {event.run_id}", state)
            elif event.run_id not in self._activating:
                self._spawn(self.activate(event.run_id), f"activate run {event.run_id}", run_id=event.run_id)

    # ----------------------------------------------------------------- activation
    async def activate(self, run_id: int) -> None:
        if run_id in self.runs or run_id in self._activating:
            return
        self._activating.add(run_id)
        try:
            state = await self._load(run_id)
            if state is None:
                return
            # one query per run: cluster changes made through any interface (API, web pages) apply from the
            # next run on, and a cluster created since the engine started is known
            await self.load_pools()
            async with state.lock:
                if state.run.status is RunStatus.PENDING:
                    try:
                        await transition_run(self.bus, state.run, RunStatus.RUNNING, message="started")
                    except StaleStatus:  # stopped before it started
                        return
                self.runs[run_id] = state
                state.token, _ = await issue_token(
                    state.run.owner_id, TokenKind.RUN, name="run", run_id=run_id
                )  # type: ignore[attr-defined]
                await self._reattach(state)
                # a stop requested while we were activating was not seen by the listener: look again
                await state.run.refresh_from_db(fields=["status", "message"])
                if state.run.status is RunStatus.STOPPING:
                    state.stopping = True
            if state.stopping:
                await self._stop(state)
            else:
                await self._advance(state)
        finally:
            self._activating.discard(run_id)

    async def _load(self, run_id: int) -> RunState | None:
        run = await Run.get_or_none(id=run_id).prefetch_related("version")
        if run is None or run.status.is_terminal:
            return None
        spec = parse_spec(run.version.spec)
        nodes = {n.name: n for n in await NodeRun.filter(run_id=run_id)}
        parents = spec.parents()
        children: dict[str, list[str]] = {name: [] for name in parents}
        for name, ps in parents.items():
            for p in ps:
                children[p].append(name)
        statuses = {n: r.status for n, r in nodes.items()}
        blocked = policies.unfinished_parents(parents, statuses)
        pins = {k: int(v) for k, v in (run.version.pinned_builds or {}).items()}
        builds = {b.id: b for b in await ModuleBuild.filter(id__in=list(pins.values()))} if pins else {}
        wanted = {s for n in spec.nodes for s in n.storages}
        storages = {d.name: d for d in await DataStorage.filter(name__in=list(wanted))} if wanted else {}
        failed = policies.first_failed(statuses)
        ready = dict.fromkeys(policies.ready_nodes(spec.topological_order(), blocked, statuses))
        return RunState(
            ready=ready,
            run=run,
            spec=spec,
            nodes=nodes,
            parents=parents,
            children=children,
            blocked=blocked,
            builds={node: builds[bid] for node, bid in pins.items() if bid in builds},
            storages=storages,
            failed_node=failed,
        )

    async def _reattach(self, state: RunState) -> None:
        """After a restart: follow attempts that are still running, or that started but were not recorded."""
        for name, node in state.nodes.items():
            if node.status is NodeStatus.RUNNING:
                attempt = await Attempt.get_or_none(node_run_id=node.id, number=node.attempt)
                handle = Handle.from_json(attempt.handle) if attempt and attempt.handle else None
                if handle is None:
                    handle = await self.executor.find(JobKey(state.run.id, name, node.attempt))
                await self._follow(state, name, attempt, handle)
            elif node.status is NodeStatus.WAITING and state.blocked[name] == 0:
                key = JobKey(state.run.id, name, node.attempt + 1)
                handle = await self.executor.find(key)
                if handle is not None:
                    attempt = await self._record_start(state, name, handle)
                    await self._follow(state, name, attempt, handle)

    async def _follow(
        self, state: RunState, name: str, attempt: Attempt | None, handle: Handle | None
    ) -> None:
        spec = state.spec.node(name)
        pool = self._pool_for(spec)
        req = pool.request(spec.task_type, spec.sku_count)
        lease = pool.acquire(req)  # it is running already, whether or not it fits
        state.running[name] = Running(lease=lease, pool=pool, handle=handle, attempt=attempt)
        if self._shares(pool):
            try:  # the same: counted whether or not it fits (a claim it holds already stays as it is)
                await ledger.record_claim(pool.name, lease, state.run.id, name)
            except Exception:
                log.exception("could not record the claim of running node %s/%s", state.run.id, name)
        self._spawn(self._watch(state, name), f"watch {state.run.id}/{name}", state, node=name)

    def _shares(self, pool: Pool) -> bool:
        """Counted in the shared ledger too (several workers; virtual clusters, not this host's ``local``)."""
        return self._shared and pool.name != "local"

    def _pool_for(self, spec: NodeSpec) -> Pool:
        pool = self.capacity.pool(spec.cluster)
        return pool if pool is not None else self.capacity.pools["local"]

    # ----------------------------------------------------------------- scheduling
    async def _advance(self, state: RunState) -> None:
        """Queue every node that may start now, dispatch, and finish the run when nothing is left."""
        if state.finished:
            return
        if not state.stopping and state.failed_node is None:
            while state.ready:
                name = next(iter(state.ready))
                del state.ready[name]
                if (
                    state.nodes[name].status is NodeStatus.WAITING
                    and name not in state.running
                    and name not in state.queued
                ):
                    await self._enqueue(state, name)
        self._dispatch()
        await self._maybe_finish(state)

    async def _enqueue(self, state: RunState, name: str) -> None:
        spec = state.spec.node(name)
        reason = self._unstartable(spec)
        if reason is not None:
            await self._fail_unstarted(state, name, reason)
            return
        pool = self._pool_for(spec)
        state.queued.add(name)
        state.queued_at.setdefault(name, time.monotonic())
        self._waiting.setdefault(pool.name, deque()).append((state.run.id, name))

    def _unstartable(self, spec: NodeSpec) -> str | None:
        """Why the node can never start (its cluster is gone, too small, or lacks the GPUs it needs)."""
        from aihub.engine.executors.local import LocalExecutor

        missing = policies.missing_cluster_reason(spec.cluster, self.capacity.pools)
        if missing is not None:
            return missing
        pool = self._pool_for(spec)
        req, total = pool.request(spec.task_type, spec.sku_count), pool.total
        room = policies.Room(
            pool.name, req.cpu_millis, req.memory_mib, req.gpu, total.cpu_millis, total.memory_mib, total.gpu
        )
        host_gpus = len([g for g in (self.settings.local_gpus or "").split(",") if g.strip()])
        on_host = isinstance(self.executor, LocalExecutor)
        return policies.cannot_fit_reason(room) or policies.host_gpu_reason(
            pool.name, req.gpu, host_gpus, runs_on_host=on_host
        )

    def _dispatch(self) -> None:
        """Start queued nodes in arrival order wherever capacity allows (smaller ones may backfill)."""
        if self._closed:
            return
        for pool_name, queue in self._waiting.items():
            if pool_name in self._resting:
                continue  # other workers hold its room: retried when the timer fires
            pool = self.capacity.pools.get(pool_name)
            if pool is None:
                self._fail_queue_of_deleted_cluster(pool_name, queue)
                continue
            total_cpu = pool.total.cpu_millis
            skipped: list[tuple[int, str]] = []
            while (
                queue and pool.used_cpu + MONITOR.cpu_millis <= total_cpu and len(skipped) < BACKFILL_WINDOW
            ):
                run_id, name = queue.popleft()
                state = self.runs.get(run_id)
                if state is None or name not in state.queued:
                    continue  # stale: the run finished or was stopped
                spec = state.spec.node(name)
                req = pool.request(spec.task_type, spec.sku_count)
                if not pool.fits(req):
                    skipped.append((run_id, name))
                    continue
                state.queued.discard(name)
                state.running[name] = Running(lease=pool.acquire(req), pool=pool)
                self._spawn(self._start(state, name), f"start {run_id}/{name}", state, node=name)
            queue.extendleft(reversed(skipped))

    def _fail_queue_of_deleted_cluster(self, pool_name: str, queue: deque[tuple[int, str]]) -> None:
        """The cluster was deleted while nodes waited for it: they fail clearly (no pool will ever free up)."""
        while queue:
            run_id, name = queue.popleft()
            state = self.runs.get(run_id)
            if state is None or name not in state.queued:
                continue
            state.queued.discard(name)
            message = f"virtual cluster {pool_name!r} was deleted while the node waited for it"
            self._spawn(
                self._fail_and_advance(state, name, message), f"fail {run_id}/{name}", state, node=name
            )

    async def _fail_and_advance(self, state: RunState, name: str, message: str) -> None:
        """A node that never got to run fails (no attempt), then the run moves on."""
        async with state.lock:
            await self._fail_unstarted(state, name, message)
        await self._advance(state)

    async def _start(self, state: RunState, name: str) -> None:
        if self._shares(state.running[name].pool) and not await self._claim(state, name):
            return
        ready_since = state.ready_since.pop(name, None)
        queued_at = state.queued_at.pop(name, None)
        if queued_at is not None:
            cluster = state.running[name].pool.name
            self.metrics.queue_wait.labels(cluster).observe(time.monotonic() - queued_at)
        spec = state.spec.node(name)
        node = state.nodes[name]
        try:
            job, fingerprint = self._job(state, spec, node)
        except InputError as exc:
            self._release(state, name)
            await self._fail_and_advance(state, name, str(exc))
            return
        build = state.builds.get(name)
        if build is not None:
            # recorded even when caching is off for this node/run, so later runs can reuse this result;
            # node env is an input too (module env is part of the build)
            env_inputs = {f"env:{k}": v for k, v in spec.env.items()}
            node.cache_key = cache_key(build.id, {**fingerprint, **env_inputs})
            use_cache = policies.may_use_cache(
                node_cache=spec.cache, run_use_cache=state.run.use_cache, has_build=True
            )
            if use_cache and await self._try_cache(state, name, node.cache_key):
                return
        try:
            handle = await self.executor.start(job)
        except Exception as exc:  # the executor could not launch it: a failed attempt, with the reason
            log.warning("start of %s/%s failed: %s", state.run.id, name, exc)
            async with state.lock:
                attempt = await self._record_start(state, name, None)
            await self._finish_attempt(
                state, name, attempt, ExitReport(exit_code=None, error=f"could not start: {exc}")
            )
            return
        if ready_since is not None:
            self.metrics.handoff.labels(state.running[name].pool.name).observe(time.monotonic() - ready_since)
        async with state.lock:
            attempt = await self._record_start(state, name, handle)
            state.running[name].handle = handle
            state.running[name].attempt = attempt
            stop_now = state.stopping
        if stop_now:
            await self.executor.stop(handle, self.settings.stop_grace_seconds)
        await self._watch(state, name)

    async def _claim(self, state: RunState, name: str) -> bool:
        """Claim the node's lease in the shared ledger. Refused (or the ledger failed): the lease goes back,
        the node to the front of its queue, and its pool rests before the next try."""
        running = state.running[name]
        key = (state.run.id, name)
        pending = self._releasing.get(key)
        if pending is not None:  # a retry: its previous attempt's claim must be gone before it claims again
            await asyncio.wait([pending])
        try:
            if await ledger.try_claim(running.pool.name, running.pool.total, running.lease, *key):
                return True
        except Exception:
            log.exception("shared capacity ledger: claim of %s/%s failed", *key)
        self._release(state, name, claim=False)
        if state.stopping or state.failed_node is not None or state.finished:
            await self._advance(state)  # nothing new starts: the run may end now
            return False
        state.queued.add(name)
        self._waiting.setdefault(running.pool.name, deque()).appendleft(key)
        self._rest(running.pool.name)
        return False

    def _rest(self, pool_name: str) -> None:
        if self._closed or pool_name in self._resting:
            return
        loop = asyncio.get_running_loop()
        self._resting[pool_name] = loop.call_later(SHARED_RETRY_DELAY, self._wake, pool_name)

    def _wake(self, pool_name: str) -> None:
        self._resting.pop(pool_name, None)
        self._dispatch()

    def _job(self, state: RunState, spec: NodeSpec, node: NodeRun) -> tuple[Job, dict[str, str]]:
        outputs_of = {p: state.nodes[p].outputs for p in state.parents[spec.name]}
        inputs = resolve_inputs(spec, state.run.params, outputs_of)
        build = state.builds.get(spec.name)
        snap = build.snapshot if build else {}
        decls: list[OutputDecl] = spec.outputs or [OutputDecl(**o) for o in snap.get("outputs", [])]
        injected = injected_env(
            user_id=state.run.owner_id,  # type: ignore[attr-defined]
            token=state.token,
            run_id=state.run.id,
            api_url=self.settings.resolved_api_url,
        )
        env = build_env(
            module_env=snap.get("env", {}), node_env=spec.env, inputs=inputs.values, injected=injected
        )
        if build is not None:
            argv = module_argv(list(build.entrypoint), inputs.values)
            image, workdir = build.image, build.workdir
        else:
            argv, image, workdir = ["sh", "-c", spec.command], spec.image, ""
        key = JobKey(state.run.id, spec.name, node.attempt + 1)
        pool = state.running[spec.name].pool
        storages = [
            StorageMount(
                name=s.name,
                path=s.path,
                host_path=s.host_path,
                volume=dict(s.volume or {}),
                read_only=s.read_only,
            )
            for n in spec.storages
            if (s := state.storages.get(n)) is not None
        ]
        if build is not None and build.context_path:
            # the local build backend's copy of the module: visible to the node at its own path, read-only
            # (a node's /tmp is private, and the data dir may live under it)
            storages.append(StorageMount(name="module-build", path=build.context_path, read_only=True))
        job = Job(
            key=key,
            argv=argv,
            env=env,
            image=image,
            workdir=workdir,
            artifacts_in=inputs.artifacts,
            outputs=[JobOutput(name=o.name, path=o.path, type=o.type) for o in decls],
            storages=storages,
            resources=state.running[spec.name].lease,
            labels={
                "aihub/run": str(state.run.id),
                "aihub/node": spec.name,
                "aihub/attempt": str(key.attempt),
                "aihub/cluster": pool.name,
            },
            max_text_output=self.settings.max_text_output,
        )
        node.inputs = inputs.values
        return job, inputs.fingerprint

    async def _record_start(
        self,
        state: RunState,
        name: str,
        handle: Handle | None,
    ) -> Attempt:
        node = state.nodes[name]
        node.attempt += 1
        node.retry_count = node.attempt - 1
        attempt = Attempt(
            node_run_id=node.id,
            number=node.attempt,
            status=NodeStatus.RUNNING,
            executor=self.executor.name,
            handle=handle.to_json() if handle else {},
            started_at=utcnow(),
        )
        label = policies.attempt_label(node.attempt, node.retry_count)
        await transition_node(
            self.bus, state.run, node, NodeStatus.RUNNING, kind="started", message=label, attempt=attempt
        )
        return attempt

    async def _try_cache(self, state: RunState, name: str, key: str) -> bool:
        source = (
            await NodeRun.filter(cache_key=key, status=NodeStatus.SUCCEEDED)
            .exclude(id=state.nodes[name].id)
            .order_by("-finished_at")
            .first()
        )
        if source is None:
            return False
        self._release(state, name)
        node = state.nodes[name]
        node.cache_source_id = source.id
        async with state.lock:
            await transition_node(
                self.bus,
                state.run,
                node,
                NodeStatus.SKIPPED,
                kind="cache_hit",
                message=f"cache hit: outputs of run {source.run_id} node {source.name}",  # type: ignore[attr-defined]
                outputs=dict(source.outputs),
            )
            self._unblock_children(state, name)
        await self._advance(state)
        return True

    # ----------------------------------------------------------------- following attempts
    async def _watch(self, state: RunState, name: str) -> None:
        running = state.running[name]
        if running.handle is None:
            report = ExitReport(exit_code=None, error="lost: the attempt never started (server restarted?)")
        else:
            try:
                report = await self.executor.wait(running.handle)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("waiting for %s/%s failed", state.run.id, name)
                report = ExitReport(exit_code=None, error=f"executor error: {exc}")
        attempt = running.attempt
        if attempt is None:
            attempt = await Attempt.get_or_none(
                node_run_id=state.nodes[name].id, number=state.nodes[name].attempt
            )
        await self._finish_attempt(state, name, attempt, report)

    async def _finish_attempt(
        self, state: RunState, name: str, attempt: Attempt | None, report: ExitReport
    ) -> None:
        # The node stays among the running ones (and keeps its lease) until its end is recorded, so the run
        # cannot be finished meanwhile by another node's end; released whatever happens, even a failed write.
        retry = False
        try:
            retry = await self._record_end(state, name, attempt, report)
            if attempt is not None:
                self._observe_attempt(state.running[name].pool.name, attempt)
        finally:
            self._release(state, name)
        if retry:  # ready only now: a node still among the running ones is not queued
            state.ready[name] = None
        await self._advance(state)

    async def _record_end(
        self, state: RunState, name: str, attempt: Attempt | None, report: ExitReport
    ) -> bool:
        """Record how the attempt ended; True when the node is to run again (an automatic retry)."""
        spec = state.spec.node(name)
        node = state.nodes[name]
        if attempt is not None:
            for hook in self.attempt_ended:
                await hook(state.run.id, name, attempt.number)
        if attempt is not None and report.started_at:
            attempt.started_at = report.started_at
        if attempt is not None and report.finished_at:
            attempt.finished_at = report.finished_at
        end = policies.AttemptEnd(
            ok=report.ok,
            stopped=report.stopped,
            run_stopping=state.stopping,
            retries_used=node.auto_retries,
            retries_allowed=spec.retries,
        )
        async with state.lock:
            outcome = policies.attempt_outcome(end)
            if outcome is policies.AttemptOutcome.SUCCEED:
                await self._record_success(state, name, attempt, report)
            elif outcome is policies.AttemptOutcome.STOP:
                message = "stopped by user" if state.stopping else (report.error or "stopped")
                code = policies.stopped_exit_code(report.exit_code, report.started_at is not None)
                await transition_node(
                    self.bus,
                    state.run,
                    node,
                    NodeStatus.STOPPED,
                    kind="stopped",
                    message=message,
                    attempt=attempt,
                    exit_code=code,
                )
            elif outcome is policies.AttemptOutcome.RETRY:
                node.auto_retries = end.retries_used + 1  # persisted with the transition
                message = policies.retry_message(
                    node.attempt, policies.failure_reason(report.error, report.exit_code)
                )
                await transition_node(
                    self.bus,
                    state.run,
                    node,
                    NodeStatus.WAITING,
                    kind="retry",
                    message=message,
                    attempt=attempt,
                    exit_code=report.exit_code,
                )
                return True
            else:
                message = policies.failure_reason(report.error, report.exit_code)
                await transition_node(
                    self.bus,
                    state.run,
                    node,
                    NodeStatus.FAILED,
                    kind="exited",
                    message=message,
                    attempt=attempt,
                    exit_code=report.exit_code,
                )
                self._fail_fast(state, name)
        return False

    async def _record_success(
        self, state: RunState, name: str, attempt: Attempt | None, report: ExitReport
    ) -> None:
        outputs = {k: v.to_json() for k, v in report.outputs.items()}
        stored = [("output_stored", _describe_output(k, v)) for k, v in outputs.items()]
        await transition_node(
            self.bus,
            state.run,
            state.nodes[name],
            NodeStatus.SUCCEEDED,
            kind="exited",
            message="exited with code 0",
            attempt=attempt,
            exit_code=0,
            outputs=outputs,
            extra_events=stored,
        )
        self._unblock_children(state, name)

    def _observe_attempt(self, cluster: str, attempt: Attempt) -> None:
        self.metrics.attempts.labels(attempt.status.value, cluster).inc()
        seconds = None
        if attempt.started_at is not None and attempt.finished_at is not None:
            seconds = max((attempt.finished_at - attempt.started_at).total_seconds(), 0.0)
            self.metrics.node_duration.labels(cluster).observe(seconds)
        took = f" after {seconds:.1f} s" if seconds is not None else ""
        log.info("attempt %d ended %s on cluster %s%s", attempt.number, attempt.status.value, cluster, took)

    def queued_by_cluster(self) -> dict[str, int]:
        """How many ready nodes wait for each virtual cluster's capacity now (``/metrics``)."""
        counts = {name: 0 for name in self.capacity.pools}
        for state in list(self.runs.values()):
            for name in list(state.queued):
                cluster = self._pool_for(state.spec.node(name)).name
                counts[cluster] = counts.get(cluster, 0) + 1
        return counts

    def _release(self, state: RunState, name: str, *, claim: bool = True) -> None:
        """The node no longer holds its share of the cluster (``claim``: in the shared ledger either)."""
        running = state.running.pop(name, None)
        if running is None:
            return
        running.pool.release(running.lease)
        if claim and self._shares(running.pool):
            key = (state.run.id, name)
            task = self._spawn(
                self._release_claim(*key), f"release claim {key[0]}/{name}", run_id=key[0], node=name
            )
            self._releasing[key] = task
            task.add_done_callback(
                lambda t: self._releasing.pop(key, None) if self._releasing.get(key) is t else None
            )

    async def _release_claim(self, run_id: int, name: str) -> None:
        try:
            await ledger.release(run_id, name)
        except Exception:  # left behind: swept once its node is over
            log.exception("shared capacity ledger: release of %s/%s failed", run_id, name)

    def _unblock_children(self, state: RunState, name: str) -> None:
        for child in state.children[name]:
            state.blocked[child] -= 1
            if state.blocked[child] == 0:
                state.ready[child] = None
                state.ready_since[child] = time.monotonic()

    async def _fail_unstarted(self, state: RunState, name: str, message: str) -> None:
        """A node that cannot start at all: WAITING -> FAILED, without an attempt (it never ran)."""
        await transition_node(
            self.bus, state.run, state.nodes[name], NodeStatus.FAILED, kind="failed", message=message
        )
        self._fail_fast(state, name)

    def _fail_fast(self, state: RunState, name: str) -> None:
        """A node failed for good: nothing new starts; running nodes finish, then the run fails."""
        state.failed_node = state.failed_node or name
        state.queued.clear()
        state.queued_at.clear()

    async def _maybe_finish(self, state: RunState) -> None:
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
            self.metrics.runs.labels(run.status.value).inc()
            log.info("run %s finished %s", run.id, run.status.value, extra={"run_id": run.id, "node": None})
            state.finished = True
            self.runs.pop(run.id, None)
        await revoke_run_tokens(run.id)

    async def _close_waiting(self, state: RunState, target: NodeStatus, kind: str, message: str) -> None:
        """The run ends: every node still WAITING moves to ``target``."""
        for node in state.nodes.values():
            if node.status is NodeStatus.WAITING:
                await transition_node(self.bus, state.run, node, target, kind=kind, message=message)

    # ----------------------------------------------------------------- stop
    async def _stop(self, state: RunState) -> None:
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
        await self._advance(state)

    # ----------------------------------------------------------------- helpers for tests and tools
    async def wait_idle(self) -> None:
        """Wait until no engine task is running (tests)."""
        while True:
            await self._idle.wait()
            await asyncio.sleep(0)
            if self._idle.is_set():
                return

    async def describe(self, attempt: Attempt) -> dict[str, Any]:
        if not attempt.handle:
            return {}
        return await self.executor.describe(Handle.from_json(attempt.handle))

    async def executor_events(self, attempt: Attempt) -> list[dict[str, Any]]:
        """The executor's own events of an attempt: Kubernetes events of its pod ([] for local nodes)."""
        if not attempt.handle:
            return []
        return await self.executor.events(Handle.from_json(attempt.handle))


def _describe_output(name: str, value: dict[str, Any]) -> str:
    if value["type"] == "path":
        return f"{name}: {value['value']} packed ({value['size']} bytes, sha256 {str(value['digest'])[:12]})"
    return f"{name}: text ({len(value['value'])} characters)"
