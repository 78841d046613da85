"""One attempt of one node: start it (or take its outputs from the cache), follow it, record how it ended.

``policies.attempt_outcome`` decides what the end leads to; this module carries it out through the one status
writer (``aihub.services.status``), never holding a database transaction across an await on the executor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from tortoise.queryset import QuerySetSingle

from aihub.db.models import Attempt, NodeRun
from aihub.domain.status import NodeStatus
from aihub.engine import policies
from aihub.engine.executors.base import ExitReport, Handle
from aihub.engine.jobs import build_job, node_cache_key
from aihub.engine.params import InputError
from aihub.engine.state import RunState
from aihub.services.status import held_start, hold_start, transition_node, utcnow, write_start

if TYPE_CHECKING:
    from aihub.engine.scheduler import Engine

log = logging.getLogger("aihub.engine")

#: seconds a node's start is held before it is written (``services.status.hold_start``): a node that ends sooner
#: has its start written with its end, in one transaction instead of two (issue 18, round thirteen); what the
#: database and the bus's ``started`` lag behind the launch at most
START_WRITE_DELAY = 0.05
#: seconds the engine spends at most writing held starts when it lets runs go (it closes, or another worker
#: takes runs over), for all of them together — a database that does not answer must not hold a shutdown or a
#: rebalance up: a start not written is found through the executor by the next owner (``Recovery._reattach``)
LET_GO_WRITE_SECONDS = 5.0


def let_go_deadline() -> float:
    """When the held starts of the runs let go now are to be written by (the loop's clock)."""
    return asyncio.get_running_loop().time() + LET_GO_WRITE_SECONDS


class Attempts:
    """Starts and follows the attempts of one ``Engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ----------------------------------------------------------------- starting
    async def start(self, state: RunState, name: str) -> None:
        """A dispatched node (it holds its share): claim, build its job, try the cache, launch, follow."""
        engine = self.engine
        if engine.dispatcher.shares(state.running[name].pool) and not await engine.dispatcher.claim(
            state, name
        ):
            return
        ready_since = state.ready_since.pop(name, None)
        self._observe_queue_wait(state, name)
        spec, node = state.spec.node(name), state.nodes[name]
        try:
            job, fingerprint = build_job(engine.settings, state, spec, node)
        except InputError as exc:
            engine.dispatcher.release(state, name)
            await engine.fail_and_advance(state, name, str(exc))
            return
        build = state.builds.get(name)
        if build is not None:
            node.cache_key = node_cache_key(build, spec, fingerprint)
            use = policies.may_use_cache(
                node_cache=spec.cache, run_use_cache=state.run.use_cache, has_build=True
            )
            if use and await self._try_cache(state, name, node.cache_key):
                return
        try:
            handle = await engine.executor.start(job)
        except Exception as exc:  # the executor could not launch it: a failed attempt, with the reason
            log.warning("start of %s/%s failed: %s", state.run.id, name, exc)
            await self._could_not_start(state, name, exc)
            return
        if ready_since is not None:
            cluster = state.running[name].pool.name
            engine.metrics.labelled(engine.metrics.handoff, cluster).observe(time.monotonic() - ready_since)
        await self._launched(state, name, handle)

    def _observe_queue_wait(self, state: RunState, name: str) -> None:
        queued_at = state.queued_at.pop(name, None)
        if queued_at is not None:
            cluster = state.running[name].pool.name
            metrics = self.engine.metrics
            metrics.labelled(metrics.queue_wait, cluster).observe(time.monotonic() - queued_at)

    async def _could_not_start(self, state: RunState, name: str, exc: Exception) -> None:
        async with state.lock:
            attempt = await self.record_start(state, name, None)
        report = ExitReport(exit_code=None, error=f"could not start: {exc}")
        await self.finish(state, name, attempt, report)

    async def _launched(self, state: RunState, name: str, handle: Handle) -> None:
        async with state.lock:
            attempt = await self.record_start(state, name, handle)
            state.running[name].handle = handle
            state.running[name].attempt = attempt
            stop_now = state.stopping
        if stop_now:
            await self.engine.executor.stop(handle, self.engine.settings.stop_grace_seconds)
        await self.watch(state, name)

    async def record_start(self, state: RunState, name: str, handle: Handle | None) -> Attempt:
        node = state.nodes[name]
        node.attempt += 1
        node.retry_count = node.attempt - 1
        attempt = Attempt(
            node_run_id=node.id,
            number=node.attempt,
            status=NodeStatus.RUNNING,
            executor=self.engine.executor.name,
            handle=handle.to_json() if handle else {},
            started_at=utcnow(),
        )
        label = policies.attempt_label(node.attempt, node.retry_count)
        hold_start(state.run, node, attempt, kind="started", message=label)
        loop = asyncio.get_running_loop()
        state.start_writes[name] = loop.call_later(START_WRITE_DELAY, self._write_start_soon, state, name)
        return attempt

    def _write_start_soon(self, state: RunState, name: str) -> None:
        state.start_writes.pop(name, None)
        self.engine.spawn(
            self._write_start(state, name), f"write start {state.run.id}/{name}", state, node=name
        )

    async def _write_start(self, state: RunState, name: str) -> None:
        """A start held this long is written (under the run's lock, so the run's events keep their order)."""
        async with state.lock:
            await self._write_held(state, state.nodes[name])

    async def _write_held(self, state: RunState, node: NodeRun) -> None:
        try:
            await write_start(self.engine.bus, state.run, node)
        except Exception as exc:  # still held: written with the node's next transition
            log.warning("the start of %s/%s is not written yet: %s", state.run.id, node.name, exc)

    async def write_held_starts(self, state: RunState, deadline: float) -> None:
        """Write every start of the run still held (the engine lets the run go: it closes, or another worker
        takes the run over), once nothing else of the run's runs; by ``deadline`` (``let_go_deadline``: one
        for all the runs let go together), then the rest is left to the next owner."""
        for timer in state.start_writes.values():
            timer.cancel()
        state.start_writes.clear()
        held = [node for node in state.nodes.values() if held_start(node) is not None]
        try:
            async with asyncio.timeout_at(deadline):
                for node in held:
                    if asyncio.get_running_loop().time() >= deadline:
                        raise TimeoutError
                    await self._write_held(state, node)
        except TimeoutError:
            log.warning(
                "run %s: held starts not written within %s s; the next owner finds those nodes running",
                state.run.id,
                LET_GO_WRITE_SECONDS,
            )

    async def _try_cache(self, state: RunState, name: str, key: str) -> bool:
        source = await cache_source(key, state.nodes[name].id)
        if source is None:
            return False
        self.engine.dispatcher.release(state, name)
        node = state.nodes[name]
        node.cache_source_id = source.id
        message = f"cache hit: outputs of run {source.run_id} node {source.name}"  # type: ignore[attr-defined]
        async with state.lock:
            await transition_node(
                self.engine.bus,
                state.run,
                node,
                NodeStatus.SKIPPED,
                kind="cache_hit",
                message=message,
                outputs=dict(source.outputs),
            )
            state.unblock_children(name)
        await self.engine.advance(state)
        return True

    # ----------------------------------------------------------------- following
    async def watch(self, state: RunState, name: str) -> None:
        running = state.running[name]
        if running.handle is None:
            report = ExitReport(exit_code=None, error="lost: the attempt never started (server restarted?)")
        else:
            try:
                report = await self.engine.executor.wait(running.handle)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("waiting for %s/%s failed", state.run.id, name)
                report = ExitReport(exit_code=None, error=f"executor error: {exc}")
        attempt = running.attempt
        if attempt is None:
            node = state.nodes[name]
            attempt = await Attempt.get_or_none(node_run_id=node.id, number=node.attempt)
        await self.finish(state, name, attempt, report)

    async def finish(self, state: RunState, name: str, attempt: Attempt | None, report: ExitReport) -> None:
        # The node stays among the running ones (and keeps its lease) until its end is recorded, so the run
        # cannot be finished meanwhile by another node's end; released whatever happens, even a failed write.
        timer = state.start_writes.pop(name, None)
        if timer is not None:  # (a start still held is written with this end)
            timer.cancel()
        retry = False
        try:
            retry = await self._record_end(state, name, attempt, report)
            if attempt is not None:
                self._observe(state.running[name].pool.name, attempt)
        finally:
            self.engine.dispatcher.release(state, name)
        if retry:  # ready only now: a node still among the running ones is not queued
            state.ready[name] = None
        await self.engine.advance(state)

    async def _record_end(
        self, state: RunState, name: str, attempt: Attempt | None, report: ExitReport
    ) -> bool:
        """Record how the attempt ended; True when the node is to run again (an automatic retry)."""
        node = state.nodes[name]
        if attempt is not None:
            for hook in self.engine.attempt_ended:
                await hook(state.run.id, name, attempt.number)
            attempt.started_at = report.started_at or attempt.started_at
            attempt.finished_at = report.finished_at or attempt.finished_at
        end = policies.AttemptEnd(
            ok=report.ok,
            stopped=report.stopped,
            run_stopping=state.stopping,
            retries_used=node.auto_retries,
            retries_allowed=state.spec.node(name).retries,
        )
        async with state.lock:
            outcome = policies.attempt_outcome(end)
            if outcome is policies.AttemptOutcome.SUCCEED:
                # the next queued nodes launch while this end is written; a node of this run records its
                # start once the lock is free, so the run's events keep their order (a failure frees nothing
                # early: fail-fast must clear the queue first)
                self.engine.dispatcher.free(state, name)
            await self._record_outcome(state, name, attempt, report, outcome)
        return outcome is policies.AttemptOutcome.RETRY

    async def _record_outcome(
        self,
        state: RunState,
        name: str,
        attempt: Attempt | None,
        report: ExitReport,
        outcome: policies.AttemptOutcome,
    ) -> None:
        node, bus = state.nodes[name], self.engine.bus
        code = report.exit_code
        if outcome is policies.AttemptOutcome.SUCCEED:
            await self._record_success(state, name, attempt, report)
            return
        if outcome is policies.AttemptOutcome.STOP:
            message = "stopped by user" if state.stopping else (report.error or "stopped")
            code = policies.stopped_exit_code(code, report.started_at is not None)
            target, kind = NodeStatus.STOPPED, "stopped"
        elif outcome is policies.AttemptOutcome.RETRY:
            node.auto_retries += 1  # persisted with the transition
            message = policies.retry_message(node.attempt, policies.failure_reason(report.error, code))
            target, kind = NodeStatus.WAITING, "retry"
        else:
            message = policies.failure_reason(report.error, code)
            target, kind = NodeStatus.FAILED, "exited"
        await transition_node(
            bus, state.run, node, target, kind=kind, message=message, attempt=attempt, exit_code=code
        )
        if outcome is policies.AttemptOutcome.FAIL:
            state.fail_fast(name)

    async def _record_success(
        self, state: RunState, name: str, attempt: Attempt | None, report: ExitReport
    ) -> None:
        outputs = {k: v.to_json() for k, v in report.outputs.items()}
        stored = [("output_stored", _describe_output(k, v)) for k, v in outputs.items()]
        early = not self.engine.settings.shares_capacity
        if early:
            # the children it makes ready launch during the write below (their jobs read these outputs); each
            # records its start after it, under the run's lock held here (``Engine.start_early``)
            state.nodes[name].outputs = outputs
            state.unblock_children(name)
            self.engine.start_early(state, state.children[name])
        # the launches dispatched since this end was heard (the freed slot's, the children's) go to the
        # launcher first: on SQLite the write below runs at once on this thread (``node_writes.SideWriters``),
        # and would otherwise hold them back by its whole length instead of overlapping it
        await asyncio.sleep(0)
        await transition_node(
            self.engine.bus,
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
        if not early:
            state.unblock_children(name)

    def _observe(self, cluster: str, attempt: Attempt) -> None:
        metrics = self.engine.metrics
        metrics.labelled(metrics.attempts, attempt.status.value, cluster).inc()
        seconds = None
        if attempt.started_at is not None and attempt.finished_at is not None:
            seconds = max((attempt.finished_at - attempt.started_at).total_seconds(), 0.0)
            metrics.labelled(metrics.node_duration, cluster).observe(seconds)
        took = f" after {seconds:.1f} s" if seconds is not None else ""
        log.info("attempt %d ended %s on cluster %s%s", attempt.number, attempt.status.value, cluster, took)


def cache_source(key: str, node_id: int) -> QuerySetSingle[NodeRun | None]:
    """The latest succeeded node run with the cache key ``key``, other than ``node_id`` (its outputs are the
    cache's). Served by the partial index on ``(cache_key, status)``: ``cache_key = ?`` implies it is set."""
    return (
        NodeRun.filter(cache_key=key, status=NodeStatus.SUCCEEDED)
        .exclude(id=node_id)
        .order_by("-finished_at")
        .first()
    )


def _describe_output(name: str, value: dict[str, Any]) -> str:
    if value["type"] == "path":
        return f"{name}: {value['value']} packed ({value['size']} bytes, sha256 {str(value['digest'])[:12]})"
    return f"{name}: text ({len(value['value'])} characters)"
