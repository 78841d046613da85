"""A database connection lost under a request is ``UNAVAILABLE``, never ``INTERNAL`` nor a wrong answer.

Through a proxy that loses the server's answer to the INSERT of ``createTeam`` after PostgreSQL committed it:
before, the engine repeated the INSERT and the client was told the team already existed (``CONFLICT``), about
the team its own request had just made.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aihub.db.models import Team
from tests.conftest import NewDatabaseUrl
from tests.db.test_insert_retry import POSTGRES_PORT, LosingProxy
from tests.graphql.harness import Server

CREATE_TEAM = "mutation($n: String!) { createTeam(name: $n) { id name } }"


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
