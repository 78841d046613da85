"""PostgreSQL reader connections of prepared selects (``aihub.db.pg_reads``): they answer what Tortoise's pool
answers, stay within their number, are not used inside a transaction (which must see its own writes), and
recover from a killed connection and a cancelled read without losing a place; closing the database closes them."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from tortoise.connection import get_connection
from tortoise.transactions import in_transaction

from aihub.bus.memory import MemoryBus
from aihub.db import pg_reads
from aihub.db.models import Run, User
from aihub.db.pg import ResilientAsyncpgClient
from aihub.db.setup import close_db, init_db
from aihub.services.access import get_run
from aihub.services.errors import NotFound
from aihub.services.runs import create_run
from aihub.services.users import create_user
from aihub.services.workflows import create_workflow
from aihub.settings import Settings
from tests.conftest import POSTGRES_ADMIN_URL

pytestmark = pytest.mark.parametrize("db_backend", ["postgres"], indirect=True)

READERS = f"SELECT pid, wait_event_type FROM pg_stat_activity WHERE datname = $1 AND application_name = 'aihub {pg_reads.APPLICATION_SUFFIX}'"


def client() -> ResilientAsyncpgClient:
    db = get_connection("default")
    assert type(db) is ResilientAsyncpgClient
    return db


def reads() -> int:
    return client().readers.reads if client().readers else 0  # type: ignore[union-attr]


async def readers_seen(database: str) -> list[asyncpg.Record]:
    """The reader connections' backends of ``database``, seen from an administrator's connection."""
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        return list(await admin.fetch(READERS, database))
    finally:
        await admin.close()


async def until(what: Callable[[], Any], description: str, timeout: float = 10.0) -> Any:
    """Poll ``await what()`` until it is truthy (a deadline, not a sleep, decides)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := await what()):
        assert asyncio.get_running_loop().time() < deadline, f"never: {description}"
        await asyncio.sleep(0.02)
    return result


async def owned_runs() -> tuple[User, User, list[Run]]:
    alice = await create_user("alice", "pw-123456789", team="ml")
    carol = await create_user("carol", "pw-123456789")
    runs = []
    for owner in (alice, carol):
        spec = {"name": f"w-{owner.username}", "nodes": [{"name": "a", "command": "true"}]}
        runs.append(await create_run(MemoryBus(), owner, (await create_workflow(owner, spec)).id))
    return alice, carol, runs


async def seen_by(user: User, run_id: int) -> tuple[Any, ...] | None:
    try:
        run = await get_run(user, run_id)
    except NotFound:
        return None
    return (run.id, run.name, run.status, run.params, run.created_at, run.started_at, run.owner_id)  # type: ignore[attr-defined]


async def test_readers_answer_what_the_pool_answers(db: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, carol, runs = await owned_runs()
    await Run.filter(id=runs[0].id).update(params={"x": [1, "ü", None]})
    cases = [(user, run.id) for user in (alice, carol) for run in runs] + [(alice, 987_654)]
    before = reads()
    through_readers = [await seen_by(user, run_id) for user, run_id in cases]
    assert reads() - before == len(cases), "the readers were not used"
    monkeypatch.setattr(pg_reads, "ENABLED", False)
    assert [await seen_by(user, run_id) for user, run_id in cases] == through_readers
    assert reads() - before == len(cases)
    assert [r is not None for r in through_readers] == [True, False, False, True, False]
    assert through_readers[0][3] == {"x": [1, "ü", None]}  # type: ignore[index]
    assert through_readers[0][4].tzinfo is not None  # type: ignore[index]


async def test_concurrent_reads_share_a_few_connections(db: Settings) -> None:
    alice, _, runs = await owned_runs()
    before = reads()
    answers = await asyncio.gather(*(seen_by(alice, runs[0].id) for _ in range(5 * pg_reads.SIZE)))
    assert answers == [answers[0]] * len(answers) and answers[0] is not None
    assert reads() - before == 5 * pg_reads.SIZE
    assert 1 <= len(await readers_seen(client().database)) <= pg_reads.SIZE  # type: ignore[arg-type]


async def test_a_transaction_reads_its_own_writes(db: Settings) -> None:
    """The hazard: a reader (another connection) does not see the transaction's uncommitted write."""
    alice, _, runs = await owned_runs()
    await seen_by(alice, runs[0].id)  # the readers are open
    before = reads()
    async with in_transaction():
        await Run.filter(id=runs[0].id).update(name="renamed in the transaction")
        assert (await get_run(alice, runs[0].id)).name == "renamed in the transaction"
    assert reads() == before


async def test_a_killed_reader_is_replaced(db: Settings) -> None:
    """The hazard: a reader whose connection died fails every read given to it."""
    alice, _, runs = await owned_runs()
    expected = await seen_by(alice, runs[0].id)
    database = client().database
    killed = await readers_seen(database)  # type: ignore[arg-type]
    assert killed
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        for row in killed:
            await admin.execute("SELECT pg_terminate_backend($1)", row["pid"])
    finally:
        await admin.close()
    await until(lambda: _none_of(database, killed), "the killed readers are gone")
    for _ in range(2 * pg_reads.SIZE):
        assert await seen_by(alice, runs[0].id) == expected
    before = reads()
    assert await seen_by(alice, runs[0].id) == expected
    assert reads() == before + 1, "no reader was opened again"


async def _none_of(database: str, rows: list[asyncpg.Record]) -> bool:
    return not {r["pid"] for r in rows} & {r["pid"] for r in await readers_seen(database)}


async def test_a_cancelled_read_frees_its_place(db: Settings) -> None:
    """The hazard: a request cancelled while its read waits would keep the reader's place (later reads would
    wait for ever) or give back a connection in the middle of a statement."""
    alice, _, runs = await owned_runs()
    expected = await seen_by(alice, runs[0].id)
    database = client().database
    locker = await asyncpg.connect(POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + database)  # type: ignore[operator]
    try:
        async with locker.transaction():
            await locker.execute('LOCK TABLE "run" IN ACCESS EXCLUSIVE MODE')
            reads_waiting = [asyncio.create_task(seen_by(alice, runs[0].id)) for _ in range(pg_reads.SIZE)]
            waiting = await until(
                lambda: _waiting_on_lock(database, pg_reads.SIZE), "every reader waits for the lock"
            )
            for task in reads_waiting:
                task.cancel()
            for task in reads_waiting:
                with pytest.raises(asyncio.CancelledError):
                    await task
        await until(lambda: _none_of(database, waiting), "the cancelled readers' connections are closed")
        before = reads()
        answers = await asyncio.wait_for(
            asyncio.gather(*(seen_by(alice, runs[0].id) for _ in range(2 * pg_reads.SIZE))), 10
        )
        assert answers == [expected] * 2 * pg_reads.SIZE
        assert reads() == before + 2 * pg_reads.SIZE
    finally:
        await locker.close()


async def _waiting_on_lock(database: str, count: int) -> list[asyncpg.Record] | None:
    rows = [r for r in await readers_seen(database) if r["wait_event_type"] == "Lock"]
    return rows if len(rows) == count else None


async def test_closing_the_database_closes_the_readers(settings: Settings, db: Settings) -> None:
    alice, _, runs = await owned_runs()
    await seen_by(alice, runs[0].id)
    database = client().database
    assert await readers_seen(database)  # type: ignore[arg-type]
    await close_db()
    try:
        await until(lambda: _no_readers(database), "the readers are closed")  # type: ignore[arg-type]
    finally:
        await init_db(settings)  # (the fixture closes it again)


async def _no_readers(database: str) -> bool:
    return not await readers_seen(database)


async def test_no_reader_is_tried_for_a_while_after_a_failed_connect(
    db_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hazard: with the server refusing new connections (``max_connections`` reached, say), every read paid
    for a failed connect before taking the ordinary path."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # nothing listens there once it is closed
    readers = pg_reads.PgReaders({"host": "127.0.0.1", "port": port, "user": "postgres", "database": "x"})
    assert await readers.fetch("SELECT 1", []) is None
    assert readers.connects == 1
    assert await readers.fetch("SELECT 1", []) is None
    assert readers.connects == 1, "a connect was tried again at once"
    monkeypatch.setattr(pg_reads, "REST_AFTER_CONNECT_FAILURE", 0.0)
    readers._resting_until = 0.0  # (the rest is over)
    assert await readers.fetch("SELECT 1", []) is None
    assert readers.connects == 2
    await readers.close()
