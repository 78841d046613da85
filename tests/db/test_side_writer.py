"""A node's status transaction on SQLite runs on the event loop's thread, on a side connection of its own
(``aihub.db.node_writes.SideWriters``), but only while Tortoise's connection is idle and no other process holds
the write lock; otherwise it goes the ordinary way, through aiosqlite's thread, and waits as Tortoise does."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time

import pytest
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from aihub.bus.memory import MemoryBus
from aihub.db import wal
from aihub.db.models import Attempt, NodeEvent, NodeRun, Run
from aihub.db.node_writes import side_writers
from aihub.db.setup import close_db, init_db
from aihub.domain.status import NodeStatus
from aihub.services.runs import create_run
from aihub.services.status import transition_node, utcnow
from aihub.services.users import create_user
from aihub.services.workflows import create_workflow
from aihub.settings import Settings

SPEC = {"name": "wf", "nodes": [{"name": "a", "command": "true"}, {"name": "b", "command": "true"}]}


@pytest.fixture
async def run(sqlite_db: Settings) -> Run:
    user = await create_user("alice", "alice-password-1")
    version = await create_workflow(user, SPEC)
    return await create_run(MemoryBus(), user, version.id)


async def _until(condition: object, what: str) -> None:
    """Poll ``condition()`` between loop turns, with a deadline."""
    deadline = time.monotonic() + 10
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in 10 s: {what}")
        await asyncio.sleep(0.001)


def _lock_waiters() -> int:
    return len(NodeRun._meta.db._lock._waiters or ())


async def test_an_idle_database_takes_the_write_on_the_side_connection(run: Run) -> None:
    node = await NodeRun.get(run_id=run.id, name="a")
    before = side_writers.writes
    attempt = Attempt(node_run_id=node.id, number=1, executor="local", started_at=utcnow())
    node.attempt = 1
    await transition_node(MemoryBus(), run, node, NodeStatus.RUNNING, kind="started", attempt=attempt)
    assert side_writers.writes == before + 1
    # what it committed is what Tortoise's own connection reads
    assert (await NodeRun.get(id=node.id)).status is NodeStatus.RUNNING
    assert (await Attempt.get(node_run_id=node.id)).id == attempt.id
    assert await NodeEvent.filter(run_id=run.id, node="a", kind="started").count() == 1


async def test_a_write_beside_an_open_tortoise_transaction_waits_for_it(run: Run) -> None:
    """A transaction of Tortoise's that has read would fail at its first write had a side connection committed
    meanwhile (its snapshot is stale): the status write waits for Tortoise's connection instead."""
    node = await NodeRun.get(run_id=run.id, name="b")
    inside, go_on = asyncio.Event(), asyncio.Event()

    async def callers_transaction() -> None:
        async with in_transaction():
            await Run.get(id=run.id)  # the transaction's snapshot
            inside.set()
            await go_on.wait()
            await Run.filter(id=run.id).update(message="edited")  # its first write

    caller = asyncio.create_task(callers_transaction())
    await inside.wait()
    before = side_writers.writes
    write = asyncio.create_task(
        transition_node(MemoryBus(), run, node, NodeStatus.FAILED, kind="failed", message="x")
    )
    await _until(lambda: _lock_waiters() == 1, "the status write waits for Tortoise's connection")
    go_on.set()
    await caller
    await write
    assert side_writers.writes == before
    assert (await Run.get(id=run.id)).message == "edited"
    assert (await NodeRun.get(id=node.id)).status is NodeStatus.FAILED


async def test_another_writer_of_the_file_sends_the_write_the_ordinary_way(
    run: Run, sqlite_db: Settings
) -> None:
    """The side connection never waits for a lock: another connection (another process) holding the write
    lock sends the transaction to aiosqlite's thread, which waits for it as every Tortoise statement does."""
    node = await NodeRun.get(run_id=run.id, name="a")
    other = sqlite3.connect(sqlite_db.data_dir / "aihub.sqlite3", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE run SET message = 'other writer' WHERE id = ?", (run.id,))
        before = side_writers.writes
        write = asyncio.create_task(
            transition_node(MemoryBus(), run, node, NodeStatus.FAILED, kind="failed", message="x")
        )
        await _until(lambda: NodeRun._meta.db._lock.locked(), "the write is under way on aiosqlite's thread")
        assert not write.done()
        other.execute("COMMIT")
        await write
    finally:
        other.close()
    assert side_writers.writes == before
    assert (await NodeRun.get(id=node.id)).status is NodeStatus.FAILED
    assert (await Run.get(id=run.id)).message == "other writer"


async def test_a_refused_row_on_the_side_connection_writes_nothing(run: Run) -> None:
    """The side connection has the client's pragmas (foreign keys on), and an error rolls the whole
    transaction back, raised as Tortoise raises it."""
    node = await NodeRun.get(run_id=run.id, name="a")
    before = side_writers.writes
    orphan = Attempt(node_run_id=node.id + 1000, number=1, executor="local", started_at=utcnow())
    node.attempt = 1
    with pytest.raises(IntegrityError):
        await transition_node(MemoryBus(), run, node, NodeStatus.RUNNING, kind="started", attempt=orphan)
    assert side_writers.writes == before + 1  # (begun there)
    assert node.status is NodeStatus.WAITING  # the writer put the object back as it was
    assert (await NodeRun.get(id=node.id)).status is NodeStatus.WAITING
    assert await NodeEvent.filter(run_id=run.id, node="a").count() == 0
    assert await Attempt.filter(node_run_id=node.id).count() == 0


async def test_closing_the_database_closes_its_side_connection(run: Run, sqlite_db: Settings) -> None:
    """Nothing keeps the database file open once the server closed it (a data dir on its own file system
    could not be unmounted)."""
    node = await NodeRun.get(run_id=run.id, name="a")
    await transition_node(MemoryBus(), run, node, NodeStatus.FAILED, kind="failed", message="x")
    side = side_writers.connection(NodeRun._meta.db)
    assert side is not None
    await close_db()
    try:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            side.execute("SELECT 1")
        database = str(sqlite_db.data_dir / "aihub.sqlite3")
        assert not [fd for fd in os.listdir("/proc/self/fd") if _target(fd).startswith(database)]
    finally:
        await init_db(sqlite_db)  # (the fixture closes it again)


def _target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


async def test_the_side_connection_has_the_servers_pragmas_and_never_waits(run: Run) -> None:
    """What keeps the write on the loop's thread cheap: no checkpoint (and its fsync) in its commits before the
    fallback size, WAL without an fsync at commit, and no wait for another writer's lock."""
    side = side_writers.connection(NodeRun._meta.db)
    assert side is not None

    def pragma(name: str) -> object:
        return side.execute(f"PRAGMA {name}").fetchone()[0]

    assert pragma("journal_mode") == "wal"
    assert pragma("wal_autocheckpoint") == wal.FALLBACK_PAGES
    assert pragma("synchronous") == 1  # NORMAL
    assert pragma("foreign_keys") == 1
    assert pragma("busy_timeout") == 0
