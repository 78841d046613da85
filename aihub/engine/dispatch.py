"""Capacity and dispatch: which queued node starts now, on which cluster's share.

Capacity is counted in memory (``engine/capacity.py``), the fast path: one FIFO queue per cluster, started in
arrival order while the pool has room; a node that does not fit may be passed by up to ``BACKFILL_WINDOW``
smaller ones behind it. With several engine workers (``Settings.shares_capacity``) a node that fits in memory
must also be granted a claim in the shared ledger (``aihub.services.capacity``) before it starts; when another
worker holds the room, the node goes back to the front of its queue and its pool rests for
``SHARED_RETRY_DELAY`` before the next try. The built-in ``local`` cluster is this host's CPUs, so it is never
shared.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from aihub.db.models import Attempt, VirtualCluster
from aihub.domain.spec import NodeSpec
from aihub.engine import policies
from aihub.engine.capacity import MONITOR, Capacity, Pool, Sku, local_pool
from aihub.engine.executors.base import Handle
from aihub.engine.state import Running, RunState
from aihub.services import capacity as ledger

if TYPE_CHECKING:
    from aihub.engine.scheduler import Engine

log = logging.getLogger("aihub.engine")

#: how many queued nodes that do not fit may be passed over to start smaller ones behind them
BACKFILL_WINDOW = 64
#: seconds a pool rests after the shared ledger refused one of its nodes (other workers hold the room)
SHARED_RETRY_DELAY = 1.0


class Dispatcher:
    """The cluster pools, the queue of each, and the shared ledger's claims; owned by one ``Engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.capacity = Capacity([])
        self.waiting: dict[str, deque[tuple[int, str]]] = {}
        self.shared = engine.settings.shares_capacity
        #: pools the shared ledger refused: skipped by ``dispatch`` until their timer fires
        self.resting: dict[str, asyncio.TimerHandle] = {}
        #: claims being released, so a node's next claim waits for the release of its previous one
        self.releasing: dict[tuple[int, str], asyncio.Task[Any]] = {}
        self.closed = False

    def close(self) -> None:
        self.closed = True
        for timer in self.resting.values():
            timer.cancel()
        self.resting.clear()

    async def load_pools(self) -> None:
        """(Re)read the clusters' sizes. Pools are updated in place, never replaced, so the reservations of
        running nodes stay counted (and a GPU is never handed out twice: one host list for every pool)."""
        s = self.engine.settings
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

    def shares(self, pool: Pool) -> bool:
        """Counted in the shared ledger too (several workers; virtual clusters, not this host's ``local``)."""
        return self.shared and pool.name != "local"

    def pool_for(self, spec: NodeSpec) -> Pool:
        pool = self.capacity.pool(spec.cluster)
        return pool if pool is not None else self.capacity.pools["local"]

    def queued_by_cluster(self) -> dict[str, int]:
        """How many ready nodes wait for each virtual cluster's capacity now (``/metrics``)."""
        counts = {name: 0 for name in self.capacity.pools}
        for state in list(self.engine.runs.values()):
            for name in list(state.queued):
                cluster = self.pool_for(state.spec.node(name)).name
                counts[cluster] = counts.get(cluster, 0) + 1
        return counts

    # ----------------------------------------------------------------- queueing
    def unstartable(self, spec: NodeSpec) -> str | None:
        """Why the node can never start (its cluster is gone, too small, or lacks the GPUs it needs)."""
        from aihub.engine.executors.local import LocalExecutor

        missing = policies.missing_cluster_reason(spec.cluster, self.capacity.pools)
        if missing is not None:
            return missing
        pool = self.pool_for(spec)
        req, total = pool.request(spec.task_type, spec.sku_count), pool.total
        room = policies.Room(
            pool.name, req.cpu_millis, req.memory_mib, req.gpu, total.cpu_millis, total.memory_mib, total.gpu
        )
        settings = self.engine.settings
        host_gpus = len([g for g in (settings.local_gpus or "").split(",") if g.strip()])
        on_host = isinstance(self.engine.executor, LocalExecutor)
        return policies.cannot_fit_reason(room) or policies.host_gpu_reason(
            pool.name, req.gpu, host_gpus, runs_on_host=on_host
        )

    def enqueue(self, state: RunState, name: str) -> None:
        """The node joins its cluster's queue (the caller checked it can ever start)."""
        pool = self.pool_for(state.spec.node(name))
        state.queued.add(name)
        state.queued_at.setdefault(name, time.monotonic())
        self.waiting.setdefault(pool.name, deque()).append((state.run.id, name))

    def dispatch(self) -> None:
        """Start queued nodes in arrival order wherever capacity allows (smaller ones may backfill)."""
        if self.closed:
            return
        for pool_name, queue in self.waiting.items():
            if pool_name in self.resting:
                continue  # other workers hold its room: retried when the timer fires
            pool = self.capacity.pools.get(pool_name)
            if pool is None:
                self._fail_queue_of_deleted_cluster(pool_name, queue)
                continue
            self._dispatch_pool(pool, queue)

    def _dispatch_pool(self, pool: Pool, queue: deque[tuple[int, str]]) -> None:
        total_cpu = pool.total.cpu_millis
        skipped: list[tuple[int, str]] = []
        while queue and pool.used_cpu + MONITOR.cpu_millis <= total_cpu and len(skipped) < BACKFILL_WINDOW:
            run_id, name = queue.popleft()
            state = self.engine.runs.get(run_id)
            if state is None or name not in state.queued:
                continue  # stale: the run finished or was stopped
            spec = state.spec.node(name)
            req = pool.request(spec.task_type, spec.sku_count)
            if not pool.fits(req):
                skipped.append((run_id, name))
                continue
            state.queued.discard(name)
            state.running[name] = Running(lease=pool.acquire(req), pool=pool)
            self.engine.spawn(
                self.engine.attempts.start(state, name), f"start {run_id}/{name}", state, node=name
            )
        queue.extendleft(reversed(skipped))

    def _fail_queue_of_deleted_cluster(self, pool_name: str, queue: deque[tuple[int, str]]) -> None:
        """The cluster was deleted while nodes waited for it: they fail clearly (no pool will ever free up)."""
        while queue:
            run_id, name = queue.popleft()
            state = self.engine.runs.get(run_id)
            if state is None or name not in state.queued:
                continue
            state.queued.discard(name)
            message = f"virtual cluster {pool_name!r} was deleted while the node waited for it"
            coro = self.engine.fail_and_advance(state, name, message)
            self.engine.spawn(coro, f"fail {run_id}/{name}", state, node=name)

    # ----------------------------------------------------------------- holding a share
    async def hold(self, state: RunState, name: str, handle: Handle | None, attempt: Attempt | None) -> None:
        """A node found running (after a restart): it holds its share whether or not it fits, and its claim in
        the shared ledger is recorded the same way (a claim it holds already stays as it is)."""
        spec = state.spec.node(name)
        pool = self.pool_for(spec)
        lease = pool.acquire(pool.request(spec.task_type, spec.sku_count))
        state.running[name] = Running(lease=lease, pool=pool, handle=handle, attempt=attempt)
        if self.shares(pool):
            try:
                await ledger.record_claim(pool.name, lease, state.run.id, name)
            except Exception:
                log.exception("could not record the claim of running node %s/%s", state.run.id, name)

    async def claim(self, state: RunState, name: str) -> bool:
        """Claim the node's lease in the shared ledger. Refused (or the ledger failed): the lease goes back,
        the node to the front of its queue, and its pool rests before the next try."""
        running = state.running[name]
        key = (state.run.id, name)
        pending = self.releasing.get(key)
        if pending is not None:  # a retry: its previous attempt's claim must be gone before it claims again
            await asyncio.wait([pending])
        try:
            if await ledger.try_claim(running.pool.name, running.pool.total, running.lease, *key):
                return True
        except Exception:
            log.exception("shared capacity ledger: claim of %s/%s failed", *key)
        self.release(state, name, claim=False)
        if state.stopping or state.failed_node is not None or state.finished:
            await self.engine.advance(state)  # nothing new starts: the run may end now
            return False
        state.queued.add(name)
        self.waiting.setdefault(running.pool.name, deque()).appendleft(key)
        self._rest(running.pool.name)
        return False

    def _rest(self, pool_name: str) -> None:
        if self.closed or pool_name in self.resting:
            return
        loop = asyncio.get_running_loop()
        self.resting[pool_name] = loop.call_later(SHARED_RETRY_DELAY, self._wake, pool_name)

    def _wake(self, pool_name: str) -> None:
        self.resting.pop(pool_name, None)
        self.dispatch()

    def free(self, state: RunState, name: str) -> None:
        """The node's attempt has ended well: its share of a pool not counted in the shared ledger goes back
        now, and the next queued nodes start, while its end is still being written — the node stays among the
        running ones until then (``release``), so its run cannot end meanwhile. A shared pool's share goes back
        with its claim, in ``release``: before, another node of this worker would be refused by the ledger."""
        running = state.running.get(name)
        if running is None or running.freed or self.shares(running.pool):
            return
        running.pool.release(running.lease)
        running.freed = True
        self.dispatch()

    def release(self, state: RunState, name: str, *, claim: bool = True) -> None:
        """The node no longer holds its share of the cluster (``claim``: in the shared ledger either)."""
        running = state.running.pop(name, None)
        if running is None:
            return
        if not running.freed:
            running.pool.release(running.lease)
        if claim and self.shares(running.pool):
            key = (state.run.id, name)
            task = self.engine.spawn(
                self._release_claim(*key), f"release claim {key[0]}/{name}", run_id=key[0], node=name
            )
            self.releasing[key] = task
            task.add_done_callback(
                lambda t: self.releasing.pop(key, None) if self.releasing.get(key) is t else None
            )

    async def _release_claim(self, run_id: int, name: str) -> None:
        try:
            await ledger.release(run_id, name)
        except Exception:  # left behind: swept once its node is over
            log.exception("shared capacity ledger: release of %s/%s failed", run_id, name)
