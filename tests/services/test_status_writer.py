"""The one status writer (``aihub.services.status``): every node write is checked against the table and is a
compare-and-set on the status it was read with, so two writers can never both move a node."""

from __future__ import annotations

import asyncio
import datetime

import pytest
from tortoise.transactions import in_transaction

from aihub.bus.memory import MemoryBus
from aihub.db.models import Attempt, NodeEvent, NodeRun, Run
from aihub.domain.status import IllegalTransition, NodeStatus
from aihub.services.runs import create_run
from aihub.services.status import StaleStatus, reset_nodes, transition_node, utcnow
from aihub.services.users import create_user
from aihub.services.workflows import create_workflow
from aihub.settings import Settings

SPEC = {"name": "wf", "nodes": [{"name": "a", "command": "true"}, {"name": "b", "command": "true"}]}


@pytest.fixture
async def run(db: Settings) -> Run:
    user = await create_user("alice", "alice-password-1")
    version = await create_workflow(user, SPEC)
    return await create_run(MemoryBus(), user, version.id)


def _attempt(node: NodeRun) -> Attempt:
    return Attempt(node_run_id=node.id, number=1, status=NodeStatus.RUNNING, started_at=utcnow())


async def test_two_writers_race_for_the_same_node_and_exactly_one_wins(run: Run) -> None:
    """Two workers read the node WAITING and both try to start it: one attempt, one event, one winner."""
    bus = MemoryBus()
    first, second = await NodeRun.get(run_id=run.id, name="a"), await NodeRun.get(run_id=run.id, name="a")
    for copy in (first, second):
        copy.attempt = 1
    results = await asyncio.gather(
        *(
            transition_node(
                bus, run, n, NodeStatus.RUNNING, kind="started", message=f"by {i}", attempt=_attempt(n)
            )
            for i, n in enumerate((first, second))
        ),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["NoneType", "StaleStatus"]
    winner, loser = (first, second) if results[0] is None else (second, first)
    assert "changed status meanwhile; it is no longer WAITING" in str(
        next(r for r in results if r is not None)
    )
    assert loser.status is NodeStatus.WAITING  # the loser's copy is as it was read
    row = await NodeRun.get(id=winner.id)
    assert (row.status, row.message) == (NodeStatus.RUNNING, winner.message)
    assert await Attempt.filter(node_run_id=row.id).count() == 1
    assert await NodeEvent.filter(run_id=run.id, node="a", kind="started").count() == 1


async def test_a_stale_copy_cannot_overwrite_a_newer_status(run: Run) -> None:
    bus = MemoryBus()
    stale = await NodeRun.get(run_id=run.id, name="a")
    fresh = await NodeRun.get(run_id=run.id, name="a")
    await transition_node(bus, run, fresh, NodeStatus.SKIPPED, kind="cache_hit")
    with pytest.raises(StaleStatus):
        await transition_node(bus, run, stale, NodeStatus.STOPPED, kind="stopped")
    assert (await NodeRun.get(id=fresh.id)).status is NodeStatus.SKIPPED


async def test_an_illegal_transition_writes_nothing(run: Run) -> None:
    node = await NodeRun.get(run_id=run.id, name="a")
    with pytest.raises(IllegalTransition, match="cannot go from WAITING to WAITING"):
        await transition_node(MemoryBus(), run, node, NodeStatus.WAITING, kind="retry")
    assert await NodeEvent.filter(run_id=run.id, node="a").count() == 0


async def test_a_node_that_cannot_start_fails_from_waiting_without_an_attempt(run: Run) -> None:
    node = await NodeRun.get(run_id=run.id, name="a")
    await transition_node(MemoryBus(), run, node, NodeStatus.FAILED, kind="failed", message="no cluster")
    row = await NodeRun.get(id=node.id)
    assert (row.status, row.attempt, row.message) == (NodeStatus.FAILED, 0, "no cluster")
    assert row.finished_at is not None and await Attempt.filter(node_run_id=row.id).count() == 0


async def test_a_started_and_ended_attempt_reads_back_as_written(run: Run) -> None:
    """The node's transaction is prebuilt SQL (``aihub.db.node_writes``), not the ORM's save: the rows it
    writes must read back through the models exactly as the objects the writer was given."""
    bus = MemoryBus()
    node = await NodeRun.get(run_id=run.id, name="a")
    node.attempt, node.cache_key = 1, "k" * 64
    attempt = Attempt(
        node_run_id=node.id, number=1, executor="local", handle={"pid": 7, "dir": "/x"}, started_at=utcnow()
    )
    await transition_node(
        bus, run, node, NodeStatus.RUNNING, kind="started", message="attempt 1", attempt=attempt
    )
    assert attempt.id is not None and attempt._saved_in_db
    # the end writes its own fields only (not the handle again), and the start the executor reported is one
    attempt.started_at = attempt.started_at - datetime.timedelta(milliseconds=3)
    outputs = {"out": {"type": "text", "value": "hi"}}
    await transition_node(
        bus,
        run,
        node,
        NodeStatus.SUCCEEDED,
        kind="exited",
        message="exited with code 0",
        attempt=attempt,
        exit_code=0,
        outputs=outputs,
        extra_events=[("output_stored", "out: text (2 characters)")],
    )
    row = await NodeRun.get(id=node.id)
    for field in (
        "status",
        "message",
        "attempt",
        "cache_key",
        "outputs",
        "exit_code",
        "started_at",
        "finished_at",
    ):
        assert getattr(row, field) == getattr(node, field), field
    saved = await Attempt.get(node_run_id=node.id)
    for field in (
        "id",
        "number",
        "status",
        "executor",
        "handle",
        "exit_code",
        "message",
        "started_at",
        "finished_at",
    ):
        assert getattr(saved, field) == getattr(attempt, field), field
    events = await NodeEvent.filter(run_id=run.id, node="a").order_by("id")
    assert [(e.kind, e.attempt, e.message) for e in events] == [
        ("started", 1, "attempt 1"),
        ("output_stored", 1, "out: text (2 characters)"),
        ("exited", 1, "exited with code 0"),
    ]
    assert all(e.created_at is not None and e.created_at.tzinfo is not None for e in events)


async def test_a_transition_inside_a_callers_transaction_is_part_of_it(run: Run) -> None:
    """Inside a transaction the caller opened, the node's statements run in it (on SQLite not in the one-call
    path, which would wait for the connection the caller holds): rolled back with it, node and events alike."""
    node = await NodeRun.get(run_id=run.id, name="a")
    with pytest.raises(RuntimeError, match="caller gives up"):
        async with in_transaction():
            await transition_node(MemoryBus(), run, node, NodeStatus.FAILED, kind="failed", message="x")
            assert (await NodeRun.get(id=node.id)).status is NodeStatus.FAILED  # seen inside
            raise RuntimeError("caller gives up")
    assert (await NodeRun.get(id=node.id)).status is NodeStatus.WAITING
    assert await NodeEvent.filter(run_id=run.id, node="a").count() == 0


async def test_reset_goes_through_the_writer_and_is_all_or_nothing(run: Run) -> None:
    bus = MemoryBus()
    a, b = await NodeRun.get(run_id=run.id, name="a"), await NodeRun.get(run_id=run.id, name="b")
    await transition_node(bus, run, a, NodeStatus.FAILED, kind="failed", message="x")
    await transition_node(bus, run, b, NodeStatus.STOPPED, kind="stopped")
    stale_b = await NodeRun.get(id=b.id)
    await reset_nodes(bus, run, [b], message="retry 1")  # b moved on meanwhile
    with pytest.raises(StaleStatus):
        await reset_nodes(bus, run, [a, stale_b], message="retry 2")
    assert (await NodeRun.get(id=a.id)).status is NodeStatus.FAILED  # nothing of the stale reset was written
    assert (a.status, a.message) == (NodeStatus.FAILED, "x")
    a.auto_retries = 2
    await reset_nodes(bus, run, [a], message="retry 2")
    row = await NodeRun.get(id=a.id)
    assert (row.status, row.message, row.auto_retries) == (NodeStatus.WAITING, "retry 2", 0)


async def test_module_and_build_writers_check_their_tables(run: Run) -> None:
    from aihub.db.models import Category, Module, ModuleBuild, User
    from aihub.domain.status import BuildStatus, ModuleStatus
    from aihub.services.status import move_build, move_module

    owner = await User.get(username="alice")
    category = await Category.create(name="c")
    module = await Module.create(
        name="m", category=category, owner=owner, git_url="https://example.com/m.git"
    )
    build = await ModuleBuild.create(module=module, number=1)
    first, second = await ModuleBuild.get(id=build.id), await ModuleBuild.get(id=build.id)
    # two finishers: the first ends it, the second finds it ended and writes nothing
    assert await move_build(first, BuildStatus.BUILT) is True
    assert await move_build(second, BuildStatus.BUILD_FAILED) is False
    assert (await ModuleBuild.get(id=build.id)).status is BuildStatus.BUILT
    with pytest.raises(IllegalTransition, match="build '1' cannot go from BUILT to BUILD_FAILED"):
        await move_build(first, BuildStatus.BUILD_FAILED)
    # by id: moves only from a status the table allows (a module that is not building is not "built")
    assert await move_module(module.id, ModuleStatus.PUBLISHED) is False
    assert await move_module(module.id, ModuleStatus.BUILT) is True
    with pytest.raises(IllegalTransition, match="module 'm' cannot go from BUILDING to PUBLISHED"):
        await move_module(module, ModuleStatus.PUBLISHED)
    with pytest.raises(StaleStatus):  # the object says BUILDING, the row is BUILT by now
        await move_module(module, ModuleStatus.BUILD_FAILED)
