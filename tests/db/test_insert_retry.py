"""An autocommit INSERT is repeated after a lost connection only when it did not commit.

The PostgreSQL engine retries a statement outside a transaction when its connection dies (aihub/db/pg.py). For
an INSERT that is only safe if the server never saw it: a connection lost after the server committed it, before
the answer came back, must not add the row a second time; one lost before it committed runs again. A TCP proxy
between the real client and the real server loses exactly those answers here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aihub.db.models import User
from aihub.db.retry import AppliedButAnswerLost
from aihub.settings import Settings
from tests.conftest import NewDatabaseUrl, open_db

POSTGRES_PORT = ":5432/"
BIND = (
    b"B"  # the first message of an execution in the extended protocol (a Parse comes first only to prepare)
)
READY_FOR_QUERY = b"Z\x00\x00\x00\x05"  # the message's type and length; its status byte follows


class LosingProxy:  # (also used by tests/graphql/test_lost_connection.py)
    """Forwards 127.0.0.1:PORT to PostgreSQL; when ``armed`` with a value, the server's answer to the COMMIT
    after the next statement executed with that value as a parameter is dropped and that connection closed:
    the server has committed it by then (or, with ``before_commit``, the answer to the statement itself)."""

    def __init__(self) -> None:
        self.armed: bytes | None = None
        #: lose the answer to the armed statement itself (inside its transaction, so it did not commit) rather
        #: than the one to the COMMIT after it
        self.before_commit = False
        self.lost = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.database = ""

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", 5432)
        self.writers += [client_w, server_w]

        inserting = False

        async def upstream() -> None:
            nonlocal inserting
            while data := await client_r.read(65536):
                # Bind (with the parameters' values), Execute, Sync: the prepared statement runs
                if self.armed and data[:1] == BIND and self.armed in data:
                    inserting = True
                server_w.write(data)
                await server_w.drain()
            server_w.close()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                # the statement's own answer ends "in a transaction" (T), the COMMIT's "idle" (I)
                if inserting and READY_FOR_QUERY + (b"T" if self.before_commit else b"I") in data:
                    self.armed = None
                    self.lost += 1
                    client_w.transport.abort()
                    server_w.close()
                    return
                client_w.write(data)
                await client_w.drain()
            client_w.close()

        with contextlib.suppress(ConnectionError):
            await asyncio.gather(upstream(), downstream())


@pytest.fixture
async def proxied_db(tmp_path: Path, new_database_url: NewDatabaseUrl) -> AsyncIterator[LosingProxy]:
    url = await new_database_url("postgres")
    assert POSTGRES_PORT in url
    proxy = LosingProxy()
    proxy.database = url.rsplit("/", 1)[1]
    await proxy.start()
    settings = Settings(
        data_dir=tmp_path / "data", database_url=url.replace(POSTGRES_PORT, f":{proxy.port}/")
    )
    try:
        async with open_db(settings):
            yield proxy
    finally:
        await proxy.close()


async def _new_user(name: str) -> User:
    return await User.create(username=name, password_hash="x", display_name=name)


async def test_an_insert_whose_answer_was_lost_is_not_repeated(proxied_db: LosingProxy) -> None:
    await _new_user("warm-up")  # the pool's connection is open before the proxy is armed
    proxied_db.armed = b"once"
    with pytest.raises(Exception) as caught:
        await _new_user("once")
    assert proxied_db.lost == 1, "the proxy lost no answer: the test proved nothing"
    assert isinstance(caught.value, AppliedButAnswerLost), caught.value
    # the row the server committed is there exactly once (a repeat would have added a second "once", or failed
    # on the unique name instead of reporting the lost connection)
    assert await User.filter(username="once").count() == 1


async def test_an_insert_lost_before_it_committed_runs_again(proxied_db: LosingProxy) -> None:
    await _new_user("warm-up")
    proxied_db.armed = b"again"
    proxied_db.before_commit = True  # the answer to the INSERT itself, inside its transaction, is lost
    user = await _new_user("again")
    assert proxied_db.lost == 1, "the proxy lost no answer: the test proved nothing"
    assert user.id is not None
    assert await User.filter(username="again").count() == 1
