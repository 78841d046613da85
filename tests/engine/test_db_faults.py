"""A database fault strands nothing (issue 11, point 10).

The audit killed the engine's PostgreSQL connections mid-run (``pg_terminate_backend``): one run stayed RUNNING
for good — its node had been launched and exited 0, but recording the start failed with
``ConnectionDoesNotExistError``, nothing retried it, and its capacity lease leaked. Here every connection of the
test database is killed again and again while runs go on: every run must end SUCCEEDED, with every node
recorded, and the cluster's capacity whole again.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest

from aihub.db.models import NodeRun, User
from aihub.db.retry import is_connection_error, retrying
from aihub.domain.status import NodeStatus, RunStatus
from aihub.runtime import Runtime
from aihub.settings import Settings
from tests.conftest import POSTGRES_ADMIN_URL
from tests.engine.support import start_run, wait_for_run

POSTGRES_ONLY = pytest.mark.parametrize("db_backend", ["postgres"], indirect=True)

SPEC = {
    "name": "through-faults",
    "nodes": [
        {"name": "a", "command": "sleep 0.2; echo a"},
        *({"name": f"b{i}", "command": "sleep 0.2", "depends_on": ["a"]} for i in range(4)),
        {"name": "c", "command": "echo c", "depends_on": [f"b{i}" for i in range(4)]},
    ],
}


async def _kill_connections(database: str, stop: asyncio.Event) -> int:
    """Terminate every connection to ``database`` but our own, every 50 ms, until ``stop``; how many."""
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    killed = 0
    try:
        while not stop.is_set():
            killed += await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)
    finally:
        await admin.close()
    return killed


async def _run_status(run_id: int) -> RunStatus:
    from aihub.db.models import Run

    return (await Run.get(id=run_id)).status


@POSTGRES_ONLY
async def test_killed_connections_strand_no_run_and_leak_no_capacity(
    rt: Runtime, user: User, settings: Settings
) -> None:
    assert settings.database_url is not None
    database = settings.database_url.rsplit("/", 1)[1]
    runs = [await start_run(rt, user, {**SPEC, "name": f"through-faults-{i}"}) for i in range(2)]
    stop = asyncio.Event()
    killer = asyncio.create_task(_kill_connections(database, stop))
    try:
        for run in runs:  # its reads go through the faults too
            await wait_for_run(rt, run.id, timeout=90)
    finally:
        stop.set()
        killed = await killer
    assert killed > 0, "no connection was killed: the test proved nothing"
    for run in runs:
        assert await _run_status(run.id) is RunStatus.SUCCEEDED
        nodes = await NodeRun.filter(run_id=run.id)
        assert {n.name: n.status for n in nodes} == dict.fromkeys(
            [n["name"] for n in SPEC["nodes"]], NodeStatus.SUCCEEDED
        )
        assert all(n.attempt == 1 for n in nodes)  # recorded once: no retry invented by a fault
    await rt.engine.wait_idle()
    for pool in rt.engine.capacity.pools.values():
        used = (pool.used_cpu, pool.used_mem, pool.used_gpu)
        assert used == (0, 0, 0), f"cluster {pool.name} leaked capacity: {used} still in use"


async def test_a_lost_connection_is_retried_and_a_real_error_is_not() -> None:
    calls: list[int] = []

    async def flaky(number: int) -> str:
        calls.append(number)
        if number < 2:
            raise asyncpg.exceptions.ConnectionDoesNotExistError(
                "connection was closed in the middle of operation"
            )
        return "done"

    assert await retrying(flaky, what="test", first_delay=0.001) == "done"
    assert calls == [0, 1, 2]

    async def wrong(number: int) -> None:
        calls.append(number)
        raise asyncpg.exceptions.UniqueViolationError("duplicate key")

    calls.clear()
    with pytest.raises(asyncpg.exceptions.UniqueViolationError):
        await retrying(wrong, what="test", first_delay=0.001)
    assert calls == [0]
    assert not is_connection_error(asyncpg.exceptions.InterfaceError("another operation is in progress"))
