"""A node that ended well gives its share of the cluster back before its end is written (issue 18: the next
queued node launches meanwhile, so a slot does not sit idle for a database round trip), while the node itself
stays among the running ones until then, its run's events keep their order, and a failure frees nothing early
(fail-fast clears the queue first). The children a node's end makes ready launch during that write too, with its
outputs, and record their start after it — but not where several engine workers share the runs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aihub.db import node_writes
from aihub.db.models import NodeEvent, NodeRun, User
from aihub.domain.status import NodeStatus, RunStatus
from aihub.engine import attempts as attempts_module
from aihub.engine.executors.base import Handle, Job
from aihub.runtime import Runtime
from tests.engine.support import node_log, start_run, wait_for_run


def _hold_the_end_of(monkeypatch: pytest.MonkeyPatch, node: str, status: NodeStatus) -> dict[str, Any]:
    """Hold the write of ``node``'s move to ``status`` until ``gate`` is set; ``held`` is set when it waits."""
    seen: dict[str, Any] = {"held": asyncio.Event(), "gate": asyncio.Event()}
    write = node_writes.write_transition

    async def held_write(row: NodeRun, *args: Any, **kwargs: Any) -> bool:
        if row.name == node and row.status is status:
            seen["held"].set()
            await seen["gate"].wait()
        return await write(row, *args, **kwargs)

    monkeypatch.setattr(node_writes, "write_transition", held_write)
    return seen


async def test_the_next_node_launches_while_an_end_is_written(
    rt: Runtime, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt.settings.local_cpus = 1  # one node at a time: "b" waits in the queue for "a"'s share
    monkeypatch.setattr(attempts_module, "START_WRITE_DELAY", 3600)  # each start is written with its end
    await rt.engine.load_pools()
    pool = rt.engine.capacity.pools["local"]
    seen = _hold_the_end_of(monkeypatch, "a", NodeStatus.SUCCEEDED)
    launched, start = asyncio.Event(), rt.executor.start

    async def spied_start(job: Job) -> Handle:
        handle = await start(job)
        if job.key.node == "b":
            launched.set()
        return handle

    monkeypatch.setattr(rt.executor, "start", spied_start)
    nodes = [{"name": "a", "command": "true"}, {"name": "b", "command": "true"}]
    run = await start_run(rt, user, {"name": "wf", "nodes": nodes})
    await asyncio.wait_for(seen["held"].wait(), 60)
    state = rt.engine.runs[run.id]
    assert "a" in state.running and state.running["a"].freed  # still running for the run, not for the pool
    assert "b" in state.running and not state.running["b"].freed  # b got a's share: dispatched already
    assert pool.used_cpu == state.running["b"].lease.cpu_millis
    # b launches meanwhile; its own start is written only after a's end (same run: one writer at a time), and
    # a's start goes with a's end
    await asyncio.wait_for(launched.wait(), 60)
    assert (await NodeRun.get(run_id=run.id, name="a")).status is NodeStatus.WAITING
    assert (await NodeRun.get(run_id=run.id, name="b")).status is NodeStatus.WAITING
    seen["gate"].set()
    run = await wait_for_run(rt, run.id)
    assert run.status is RunStatus.SUCCEEDED, run.message
    kinds = [
        (e.node, e.kind) for e in await NodeEvent.filter(run_id=run.id, node__isnull=False).order_by("id")
    ]
    assert kinds == [("a", "started"), ("a", "exited"), ("b", "started"), ("b", "exited")]
    assert pool.used_cpu == 0  # every share went back once, none twice


async def test_a_failure_frees_nothing_before_it_is_written(
    rt: Runtime, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt.settings.local_cpus = 1
    await rt.engine.load_pools()
    pool = rt.engine.capacity.pools["local"]
    seen = _hold_the_end_of(monkeypatch, "a", NodeStatus.FAILED)
    nodes = [{"name": "a", "command": "exit 3"}, {"name": "b", "command": "true"}]
    run = await start_run(rt, user, {"name": "wf", "nodes": nodes})
    await asyncio.wait_for(seen["held"].wait(), 60)
    state = rt.engine.runs[run.id]
    assert not state.running["a"].freed and "b" not in state.running
    assert pool.used_cpu == state.running["a"].lease.cpu_millis
    seen["gate"].set()
    run = await wait_for_run(rt, run.id)
    assert run.status is RunStatus.FAILED
    b = await NodeRun.get(run_id=run.id, name="b")
    assert b.status is NodeStatus.SKIPPED and b.attempt == 0  # fail-fast: never started
    assert pool.used_cpu == 0


CHAIN = [
    {
        "name": "a",
        "command": "echo from-a > /tmp/o",
        "outputs": [{"name": "o", "path": "/tmp/o", "type": "text"}],
    },
    {"name": "b", "command": 'echo "got $v"', "inputs": [{"name": "v", "from": "a.o"}]},
]


def _spy_on_starts(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> dict[str, asyncio.Event]:
    """An event per node, set once the executor has launched it."""
    launched: dict[str, asyncio.Event] = {"a": asyncio.Event(), "b": asyncio.Event()}
    start = rt.executor.start

    async def spied_start(job: Job) -> Handle:
        handle = await start(job)
        launched[job.key.node].set()
        return handle

    monkeypatch.setattr(rt.executor, "start", spied_start)
    return launched


async def test_a_child_launches_while_its_parents_end_is_written(
    rt: Runtime, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attempts_module, "START_WRITE_DELAY", 3600)  # each start is written with its end
    seen = _hold_the_end_of(monkeypatch, "a", NodeStatus.SUCCEEDED)
    launched = _spy_on_starts(rt, monkeypatch)
    run = await start_run(rt, user, {"name": "wf", "nodes": CHAIN})
    await asyncio.wait_for(seen["held"].wait(), 60)
    await asyncio.wait_for(launched["b"].wait(), 60)  # with a's outputs, a's end (and start) not written yet
    assert (await NodeRun.get(run_id=run.id, name="a")).status is NodeStatus.WAITING
    assert (await NodeRun.get(run_id=run.id, name="b")).status is NodeStatus.WAITING
    seen["gate"].set()
    run = await wait_for_run(rt, run.id)
    assert run.status is RunStatus.SUCCEEDED, run.message
    assert (await node_log(rt, run.id, "b")).strip() == "got from-a"
    b = await NodeRun.get(run_id=run.id, name="b")
    assert b.inputs == {"v": "from-a"}
    kinds = [
        (e.node, e.kind) for e in await NodeEvent.filter(run_id=run.id, node__isnull=False).order_by("id")
    ]
    assert kinds == [
        ("a", "started"),
        ("a", "output_stored"),
        ("a", "exited"),
        ("b", "started"),
        ("b", "exited"),
    ]


async def test_with_several_engine_workers_a_child_waits_for_its_parents_end(
    rt: Runtime, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker may own the run by then (a write refused as stale): nothing starts on a parent's end
    before it is written."""
    rt.settings.shared_capacity = "on"
    seen = _hold_the_end_of(monkeypatch, "a", NodeStatus.SUCCEEDED)
    launched = _spy_on_starts(rt, monkeypatch)
    run = await start_run(rt, user, {"name": "wf", "nodes": CHAIN})
    await asyncio.wait_for(seen["held"].wait(), 60)
    state = rt.engine.runs[run.id]
    # (the early way dispatches the child before the write begins: it would be running by now)
    assert state.blocked["b"] == 1 and "b" not in state.ready and "b" not in state.running
    seen["gate"].set()
    run = await wait_for_run(rt, run.id)
    assert run.status is RunStatus.SUCCEEDED, run.message
    assert launched["b"].is_set()
