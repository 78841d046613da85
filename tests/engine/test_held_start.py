"""The engine holds a node's start (``attempts.START_WRITE_DELAY``): a node that ends sooner is written once, its
start with its end; a node that runs on has its start written while it runs; a start still held when the engine
closes is written then (issue 18, round thirteen: one transaction a node instead of two)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from aihub.db import node_writes
from aihub.db.models import Attempt, NodeEvent, NodeRun, User
from aihub.domain.status import NodeStatus, RunStatus
from aihub.engine import attempts as attempts_module
from aihub.runtime import Runtime, open_runtime
from aihub.services.users import create_user
from aihub.settings import Settings
from tests.conftest import NodeTransactions
from tests.engine.support import start_run, wait_for_node, wait_for_run
from tests.polling import gate_wait, until


async def test_nodes_that_end_before_their_start_is_written_are_written_once(
    rt: Runtime, user: User, node_transactions: NodeTransactions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attempts_module, "START_WRITE_DELAY", 3600)
    sub = rt.bus.subscribe(None)
    try:
        nodes = [{"name": "a", "command": "true"}, {"name": "b", "command": "true", "depends_on": ["a"]}]
        run = await start_run(rt, user, {"name": "wf", "nodes": nodes})
        run = await wait_for_run(rt, run.id)
        assert run.status is RunStatus.SUCCEEDED, run.message
        assert node_transactions == [
            ("a", NodeStatus.WAITING, NodeStatus.SUCCEEDED),
            ("b", NodeStatus.WAITING, NodeStatus.SUCCEEDED),
        ]
        published = []
        while not sub._queue.empty():
            event = sub._queue.get_nowait()
            if event.node is not None:
                published.append((event.node, event.node_status, event.attempt))
    finally:
        sub.close()
    assert published == [
        ("a", "RUNNING", 1),
        ("a", "SUCCEEDED", 1),
        ("b", "RUNNING", 1),
        ("b", "SUCCEEDED", 1),
    ]
    kinds = (
        await NodeEvent.filter(run_id=run.id, node__isnull=False).order_by("id").values_list("node", "kind")
    )
    assert kinds == [("a", "started"), ("a", "exited"), ("b", "started"), ("b", "exited")]
    for name in ("a", "b"):
        node = await NodeRun.get(run_id=run.id, name=name)
        attempt = await Attempt.get(node_run_id=node.id)
        assert (attempt.status, attempt.exit_code, attempt.executor) == (NodeStatus.SUCCEEDED, 0, "local")
        assert attempt.handle and attempt.started_at <= attempt.finished_at  # type: ignore[operator]


async def test_a_node_that_runs_on_has_its_start_written_while_it_runs(
    rt: Runtime, user: User, node_transactions: NodeTransactions, host_dir: Path
) -> None:
    """The default delay: the database says RUNNING, with the attempt and its handle, before the node ends."""
    gate = host_dir / "gate"
    command = gate_wait(gate)
    run = await start_run(rt, user, {"name": "wf", "nodes": [{"name": "a", "command": command}]})
    node = await wait_for_node(rt, run.id, "a", NodeStatus.RUNNING)
    attempt = await Attempt.get(node_run_id=node.id)
    assert attempt.status is NodeStatus.RUNNING and attempt.handle
    assert node_transactions == [("a", NodeStatus.WAITING, NodeStatus.RUNNING)]
    gate.touch()
    run = await wait_for_run(rt, run.id)
    assert run.status is RunStatus.SUCCEEDED, run.message
    assert node_transactions[1:] == [("a", NodeStatus.RUNNING, NodeStatus.SUCCEEDED)]


async def test_a_start_held_when_the_engine_closes_is_written_and_followed_by_the_next(
    settings: Settings, host_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attempts_module, "START_WRITE_DELAY", 3600)
    launched, gate = host_dir / "launched", host_dir / "gate"
    command = f'echo x >> "{launched}"; ' + gate_wait(gate)
    async with open_runtime(settings) as rt:
        user = await create_user("alice", "alice-password-1")
        run = await start_run(rt, user, {"name": "wf", "nodes": [{"name": "a", "command": command}]})
        await until(launched.exists, "the node to run")
        assert (await NodeRun.get(run_id=run.id, name="a")).status is NodeStatus.WAITING  # held
    async with open_runtime(settings, run_engine=False):  # closed: the start was written
        node = await NodeRun.get(run_id=run.id, name="a")
        assert (node.status, node.attempt) == (NodeStatus.RUNNING, 1)
        assert (await Attempt.get(node_run_id=node.id)).handle
    gate.touch()
    async with open_runtime(settings) as rt:
        run = await wait_for_run(rt, run.id)
        assert run.status is RunStatus.SUCCEEDED, run.message
        assert await Attempt.filter(node_run__run_id=run.id).count() == 1
    assert launched.read_text().split() == ["x"]  # followed, not run again


async def test_a_database_that_does_not_answer_does_not_hold_the_engine_s_close_up(
    settings: Settings, host_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The held starts are left to the next server (it finds the nodes through the executor). The bound is one
    for the whole close, not one a run: the first run's write takes it all, the second's is not tried."""
    monkeypatch.setattr(attempts_module, "START_WRITE_DELAY", 3600)
    monkeypatch.setattr(attempts_module, "LET_GO_WRITE_SECONDS", 0.2)
    gate = host_dir / "gate"
    write = node_writes.write_transition
    tried = []

    async def no_answer(*args: Any) -> bool:
        tried.append(args)
        await asyncio.Event().wait()  # (cancelled by the close's bound)
        return False

    async with asyncio.timeout(30), open_runtime(settings) as rt:  # (the close too)
        user = await create_user("alice", "alice-password-1")
        runs = []
        for name in ("one", "two"):
            launched = host_dir / name
            command = f'echo x >> "{launched}"; ' + gate_wait(gate)
            runs.append(
                await start_run(rt, user, {"name": name, "nodes": [{"name": "a", "command": command}]})
            )
            await until(launched.exists, f"run {name}'s node to run")
        monkeypatch.setattr(node_writes, "write_transition", no_answer)
    assert len(tried) == 1, "one bound for the close: the second run's held start was not tried"
    for run in runs:
        assert f"run {run.id}: held starts not written within 0.2 s" in caplog.text
    monkeypatch.setattr(node_writes, "write_transition", write)
    async with open_runtime(settings, run_engine=False):
        for run in runs:
            assert (await NodeRun.get(run_id=run.id, name="a")).status is NodeStatus.WAITING  # not written
    gate.touch()
    async with open_runtime(settings) as rt:
        for run in runs:
            run = await wait_for_run(rt, run.id)
            assert run.status is RunStatus.SUCCEEDED, run.message
    for name in ("one", "two"):
        assert (host_dir / name).read_text().split() == ["x"]  # found and followed, not run again
