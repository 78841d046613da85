"""A node's held start (``services.status.hold_start``): the node is RUNNING in memory, and its start is written
later, by ``write_start`` or in the same transaction as the node's next transition, and published only once
written, in the order things happened."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from aihub.bus.base import RunEvent
from aihub.bus.memory import MemoryBus
from aihub.db import node_writes
from aihub.db.models import Attempt, NodeEvent, NodeRun, Run, User
from aihub.domain.status import IllegalTransition, NodeStatus, RunStatus
from aihub.services.queries import run_events
from aihub.services.runs import create_run
from aihub.services.status import hold_start, transition_node, transition_run, utcnow, write_start
from aihub.services.users import create_user
from aihub.services.workflows import create_workflow
from aihub.settings import Settings
from tests.conftest import NodeTransactions

SPEC = {"name": "wf", "nodes": [{"name": "a", "command": "true"}, {"name": "b", "command": "true"}]}


@pytest.fixture
async def user(db: Settings) -> User:
    return await create_user("alice", "alice-password-1")


@pytest.fixture
async def run(user: User) -> Run:
    version = await create_workflow(user, SPEC)
    return await create_run(MemoryBus(), user, version.id)


def _start(run: Run, node: NodeRun) -> Attempt:
    node.attempt += 1
    attempt = Attempt(node_run_id=node.id, number=node.attempt, executor="local", started_at=utcnow())
    hold_start(run, node, attempt, kind="started", message="attempt 1")
    return attempt


@contextlib.contextmanager
def _database_down(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every node transaction fails meanwhile."""

    async def down(*args: Any) -> bool:
        raise RuntimeError("the database is down")

    with monkeypatch.context() as patched:
        patched.setattr(node_writes, "write_transition", down)
        yield


async def _a_started(run: Run) -> tuple[MemoryBus, NodeRun, Attempt]:
    """A bus, and node ``a`` with its start held."""
    node = await NodeRun.get(run_id=run.id, name="a")
    return MemoryBus(), node, _start(run, node)


def _published(bus: MemoryBus, run: Run) -> Any:
    return bus.subscribe(run.id)


def _drain(sub: Any) -> list[tuple[str | None, str | None]]:
    events: list[RunEvent] = []
    while not sub._queue.empty():
        events.append(sub._queue.get_nowait())
    return [(e.node, e.node_status) for e in events]


async def test_a_start_held_until_the_end_is_written_with_it_in_one_transaction(
    run: Run, node_transactions: NodeTransactions
) -> None:
    bus, node, attempt = await _a_started(run)
    sub = _published(bus, run)
    assert node.status is NodeStatus.RUNNING and node.started_at is not None  # in memory
    row = await NodeRun.get(id=node.id)
    assert (row.status, row.attempt) == (NodeStatus.WAITING, 0)  # not written: the database is as it was
    assert await Attempt.filter(node_run_id=node.id).count() == 0 and _drain(sub) == []

    await transition_node(
        bus,
        run,
        node,
        NodeStatus.SUCCEEDED,
        kind="exited",
        message="exited with code 0",
        attempt=attempt,
        exit_code=0,
    )
    assert node_transactions == [
        ("a", NodeStatus.WAITING, NodeStatus.SUCCEEDED)
    ]  # one transaction, from WAITING
    row = await NodeRun.get(id=node.id)
    assert (row.status, row.attempt, row.exit_code) == (NodeStatus.SUCCEEDED, 1, 0)
    assert row.started_at == node.started_at and row.finished_at is not None
    (saved,) = await Attempt.filter(node_run_id=node.id)
    assert (saved.number, saved.status, saved.exit_code) == (1, NodeStatus.SUCCEEDED, 0)
    assert saved.started_at == attempt.started_at and saved.finished_at is not None
    events = await NodeEvent.filter(run_id=run.id, node="a").order_by("id")
    assert [(e.kind, e.message) for e in events] == [
        ("started", "attempt 1"),
        ("exited", "exited with code 0"),
    ]
    assert events[0].created_at < events[1].created_at  # each timed when it happened
    assert _drain(sub) == [("a", "RUNNING"), ("a", "SUCCEEDED")]  # both published, in order, once written


async def test_a_start_written_on_its_own_is_published_then_and_the_end_goes_as_usual(
    run: Run, node_transactions: NodeTransactions
) -> None:
    bus, node, attempt = await _a_started(run)
    sub = _published(bus, run)
    await write_start(bus, run, node)
    await write_start(bus, run, node)  # (nothing held any more: nothing written)
    row = await NodeRun.get(id=node.id)
    assert (row.status, row.attempt) == (NodeStatus.RUNNING, 1)
    assert (await Attempt.get(node_run_id=node.id)).status is NodeStatus.RUNNING
    assert _drain(sub) == [("a", "RUNNING")]
    await transition_node(bus, run, node, NodeStatus.FAILED, kind="exited", attempt=attempt, exit_code=3)
    assert node_transactions == [
        ("a", NodeStatus.WAITING, NodeStatus.RUNNING),
        ("a", NodeStatus.RUNNING, NodeStatus.FAILED),
    ]
    assert (await Attempt.get(node_run_id=node.id)).exit_code == 3
    assert _drain(sub) == [("a", "FAILED")]


async def test_a_held_start_that_could_not_be_written_goes_with_the_end(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus, node, attempt = await _a_started(run)
    with _database_down(monkeypatch), pytest.raises(RuntimeError, match="the database is down"):
        await write_start(bus, run, node)
    assert node.status is NodeStatus.RUNNING  # still started, still held
    await transition_node(bus, run, node, NodeStatus.SUCCEEDED, kind="exited", attempt=attempt, exit_code=0)
    kinds = await NodeEvent.filter(run_id=run.id, node="a").order_by("id").values_list("kind", flat=True)
    assert kinds == ["started", "exited"]
    assert (await Attempt.get(node_run_id=node.id)).status is NodeStatus.SUCCEEDED


async def test_an_end_that_could_not_be_written_keeps_the_start_held(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus, node, attempt = await _a_started(run)
    with _database_down(monkeypatch), pytest.raises(RuntimeError):
        await transition_node(
            bus, run, node, NodeStatus.SUCCEEDED, kind="exited", attempt=attempt, exit_code=0
        )
    # as it was: started in memory, the attempt running, the start held
    assert (node.status, attempt.status, attempt.finished_at, attempt.exit_code) == (
        NodeStatus.RUNNING,
        NodeStatus.RUNNING,
        None,
        None,
    )
    await write_start(bus, run, node)
    assert (await NodeRun.get(id=node.id)).status is NodeStatus.RUNNING
    assert (await Attempt.get(node_run_id=node.id)).finished_at is None


async def test_a_transition_waits_for_the_start_being_written(
    run: Run, node_transactions: NodeTransactions
) -> None:
    bus, node, attempt = await _a_started(run)
    end = transition_node(bus, run, node, NodeStatus.SUCCEEDED, kind="exited", attempt=attempt, exit_code=0)
    await asyncio.gather(write_start(bus, run, node), end)
    assert node_transactions == [
        ("a", NodeStatus.WAITING, NodeStatus.RUNNING),
        ("a", NodeStatus.RUNNING, NodeStatus.SUCCEEDED),
    ]
    assert (await NodeRun.get(id=node.id)).status is NodeStatus.SUCCEEDED


async def test_a_start_cannot_be_held_twice_nor_from_the_wrong_status(run: Run) -> None:
    node = await NodeRun.get(run_id=run.id, name="a")
    _start(run, node)
    with pytest.raises(IllegalTransition):  # RUNNING -> RUNNING
        _start(run, node)
    other = await NodeRun.get(run_id=run.id, name="b")
    await transition_node(MemoryBus(), run, other, NodeStatus.SKIPPED, kind="cache_hit")
    with pytest.raises(IllegalTransition):
        hold_start(run, other, Attempt(node_run_id=other.id, number=1), kind="started", message="")
    assert other.status is NodeStatus.SKIPPED and other.started_at is None


async def test_the_run_s_events_read_in_the_order_they_happened(run: Run, user: User) -> None:
    """``a``'s start is held while ``b`` starts and ends: written after ``b``'s events, read before them."""
    bus = MemoryBus()
    a, b = await NodeRun.get(run_id=run.id, name="a"), await NodeRun.get(run_id=run.id, name="b")
    attempt_a = _start(run, a)
    attempt_b = _start(run, b)
    await write_start(bus, run, b)
    await transition_node(bus, run, b, NodeStatus.SUCCEEDED, kind="exited", attempt=attempt_b, exit_code=0)
    await transition_node(bus, run, a, NodeStatus.SUCCEEDED, kind="exited", attempt=attempt_a, exit_code=0)
    written = await NodeEvent.filter(run_id=run.id, node__isnull=False).order_by("id")
    assert [(e.node, e.kind) for e in written] == [
        ("b", "started"),
        ("b", "exited"),
        ("a", "started"),
        ("a", "exited"),
    ]
    read = [(e.node, e.kind) for e in await run_events(user, run.id) if e.node is not None]
    assert read == [("a", "started"), ("b", "started"), ("b", "exited"), ("a", "exited")]


async def test_a_held_start_is_published_with_the_run_s_status_when_written(run: Run) -> None:
    """A stop asked for while the start was held: its event must not show the run RUNNING again."""
    bus = MemoryBus()
    await transition_run(bus, run, RunStatus.RUNNING)
    node = await NodeRun.get(run_id=run.id, name="a")
    _start(run, node)
    await transition_run(bus, run, RunStatus.STOPPING, message="stop requested")
    sub = _published(bus, run)
    await write_start(bus, run, node)
    event = sub._queue.get_nowait()
    assert (event.node, event.node_status, event.run_status) == ("a", "RUNNING", "STOPPING")
