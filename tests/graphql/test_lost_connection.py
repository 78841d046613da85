"""A database connection lost under a request is ``UNAVAILABLE``, never ``INTERNAL`` nor a wrong answer.

Through a proxy that loses the server's answer to the INSERT of ``createTeam`` after PostgreSQL committed it:
before, the engine repeated the INSERT and the client was told the team already existed (``CONFLICT``), about
the team its own request had just made. And a status poll, read on the reader connections of
``aihub.db.pg_reads``, when the database goes away.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from aihub.db import retry
from aihub.db.models import Run, Team
from aihub.db.pg import ResilientAsyncpgClient
from aihub.services.runs import create_run
from aihub.services.workflows import create_workflow
from tests.conftest import NewDatabaseUrl
from tests.db.test_insert_retry import POSTGRES_PORT, LosingProxy
from tests.graphql.harness import Server

CREATE_TEAM = "mutation($n: String!) { createTeam(name: $n) { id name } }"
STATUS = "query($id: ID!) { run(id: $id) { status } }"


@pytest.fixture
def app_options() -> dict[str, Any]:
    return {"run_engine": False}  # (no engine working on the database while it goes away)


@pytest.fixture
async def proxy() -> AsyncIterator[LosingProxy]:
    losing = LosingProxy()
    await losing.start()
    try:
        yield losing
    finally:
        await losing.close()


@pytest.fixture
async def database_url(new_database_url: NewDatabaseUrl, proxy: LosingProxy) -> str:
    url = await new_database_url("postgres")
    return url.replace(POSTGRES_PORT, f":{proxy.port}/")


async def test_a_lost_answer_to_a_write_is_unavailable_and_the_write_is_there_once(
    users: Server, proxy: LosingProxy
) -> None:
    await users.gql(CREATE_TEAM, {"n": "warm-up"}, as_="admin")  # its INSERT is prepared
    proxy.armed = b"vision"
    error = await users.error(CREATE_TEAM, {"n": "vision"}, as_="admin")
    assert proxy.lost == 1, "the proxy lost no answer: the test proved nothing"
    assert error["extensions"]["code"] == "UNAVAILABLE", error
    assert "check before repeating" in error["message"]
    assert await Team.filter(name="vision").count() == 1
    # and the API answers again on a new connection
    assert (await users.gql("{ teams { name } }", as_="admin"))["teams"]


async def test_a_database_gone_under_a_status_poll_is_unavailable(
    users: Server, proxy: LosingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hazard: a failing reader connection answering otherwise than the pool would (``INTERNAL``)."""
    alice = users.users["alice"]
    spec = {"name": "lost", "nodes": [{"name": "a", "command": "true"}]}
    run = await create_run(users.rt.bus, alice, (await create_workflow(alice, spec)).id)
    assert await users.gql(STATUS, {"id": run.id}, as_="alice") == {"run": {"status": "PENDING"}}
    db = Run._meta.db
    assert isinstance(db, ResilientAsyncpgClient) and db.readers and db.readers.reads, "no reader read it"
    monkeypatch.setitem(retry.retrying.__kwdefaults__, "deadline", 0.5)  # (not a minute of retries)
    await proxy.close()  # every connection lost, no new one accepted
    error = await users.error(STATUS, {"id": run.id}, as_="alice")
    assert error["extensions"]["code"] == "UNAVAILABLE", error
