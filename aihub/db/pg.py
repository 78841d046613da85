"""Tortoise's asyncpg engine, with statements outside a transaction retried on a lost connection.

Selected for every ``postgres://`` URL by :func:`aihub.db.setup.database_config` (Tortoise loads an engine module
by name and takes its ``client_class``). A statement of its own — a read, or a one-statement write in autocommit —
runs again on a fresh pooled connection when the connection died under it (:mod:`aihub.db.retry`).

An insert is not safe to repeat blindly: the connection may die after the server committed it, before the answer
came back, and a repeat would add the row twice (or fail on a unique name, telling the client that what it just
made already exists). So an insert runs in a transaction whose id it takes first; when the connection is lost,
PostgreSQL's ``txid_status`` says on a new connection whether that transaction committed: if not, the insert runs
again; if it did, :class:`~aihub.db.retry.AppliedButAnswerLost` is raised (the API says ``UNAVAILABLE``). Statements in a
transaction are not retried one by one: the transaction is rolled back whole, and the code that opened it retries
it (``aihub.services.status``, ``aihub.services.capacity``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
from tortoise.backends.asyncpg.client import AsyncpgDBClient, TransactionWrapper
from tortoise.backends.base.client import (
    PoolConnectionWrapper,
    TransactionalDBClient,
    TransactionContext,
    TransactionContextPooled,
)
from tortoise.backends.base_postgres.client import translate_exceptions
from tortoise.connection import get_connections
from tortoise.exceptions import TransactionManagementError

from aihub.db import pg_reads
from aihub.db.retry import AppliedButAnswerLost, is_connection_error, retrying

log = logging.getLogger("aihub.db")


def _broken(exc: BaseException | None) -> bool:
    """The connection must not go back to the pool as it is: lost, or left mid-operation by an error."""
    return exc is not None and is_connection_error(exc)


async def _give_back(pool: asyncpg.Pool, connection: asyncpg.Connection | None, broken: bool) -> None:
    """Release ``connection`` to ``pool``; a broken one is terminated first (the pool then opens a new one)."""
    if connection is None:
        return
    if broken:
        with contextlib.suppress(asyncpg.InterfaceError):  # a proxy detached already
            connection.terminate()
    try:
        await pool.release(connection)
    except Exception:  # killed meanwhile (its reset failed): asyncpg terminated it, the work was done
        log.debug("a pooled connection could not be reset; it was closed", exc_info=True)


class _Connection(PoolConnectionWrapper[asyncpg.Connection]):
    """Tortoise's pooled connection for one statement; a connection broken under it is not reused."""

    async def __aexit__(self, exc_type: Any, exc_val: BaseException | None, exc_tb: Any) -> None:
        await _give_back(self.client._pool, self.connection, _broken(exc_val))


class _TransactionContext(TransactionContextPooled):
    """Tortoise's, except that a connection broken under the transaction is not reused, and the task's context
    forgets the transaction whatever fails (Tortoise leaves it pointing at the dead transaction when ``BEGIN``
    or the release fails, so every later query of the task fails too)."""

    async def __aenter__(self) -> TransactionalDBClient:
        await self.ensure_connection()
        self.client._connection = await self.client._parent._pool.acquire()
        self.token = get_connections().set(self.connection_name, self.client)
        try:
            await self.client.begin()
        except BaseException as exc:
            get_connections().reset(self.token)
            await _give_back(self.client._parent._pool, self.client._connection, _broken(exc))
            raise
        return self.client

    async def __aexit__(self, exc_type: Any, exc_val: BaseException | None, exc_tb: Any) -> None:
        broken = _broken(exc_val)
        try:
            if not self.client._finalized:
                if exc_type is None:
                    await self.client.commit()
                elif not broken and exc_type is not TransactionManagementError:
                    await self.client.rollback()  # (a lost connection rolled back already)
        except BaseException as exc:
            broken = broken or _broken(exc)
            raise
        finally:
            try:
                await _give_back(self.client._parent._pool, self.client._connection, broken)
            finally:
                get_connections().reset(self.token)


class ResilientAsyncpgClient(AsyncpgDBClient):
    #: the reader connections of prepared selects, opened on the first (``aihub.db.pg_reads``)
    readers: pg_reads.PgReaders | None = None

    async def fetch_prepared(self, sql: str, values: list[Any]) -> list[asyncpg.Record] | None:
        """The rows of a prepared select (``aihub.db.prepared``) read on a reader connection outside any
        transaction (:mod:`aihub.db.pg_reads`), or None: read them with :meth:`execute_query`."""
        readers = self.readers
        if readers is None:
            if not pg_reads.ENABLED or self._pool is None:  # (the pool opens on the first ordinary query)
                return None
            readers = self.readers = pg_reads.PgReaders(
                pg_reads.connect_options(self._template, self.password)
            )
        return await readers.fetch(sql, values) if pg_reads.ENABLED else None

    async def _close_readers(self) -> None:
        readers, self.readers = self.readers, None
        if readers is not None:
            await readers.close()

    async def _close(self) -> None:
        await self._close_readers()
        await super()._close()

    async def _expire_connections(self) -> None:
        await self._close_readers()
        await super()._expire_connections()

    def acquire_connection(self) -> _Connection:  # type: ignore[override]
        return _Connection(self, self._pool_init_lock)

    def _in_transaction(self) -> TransactionContext:
        return _TransactionContext(TransactionWrapper(self), self._pool_init_lock)

    async def execute_insert(self, query: str, values: list) -> asyncpg.Record | None:
        return await retrying(lambda _: self._write_once(query, [values], many=False), what="insert")

    async def execute_many(self, query: str, values: list) -> None:
        await retrying(lambda _: self._write_once(query, values, many=True), what="write")

    @translate_exceptions
    async def _write_once(self, query: str, rows: list, *, many: bool) -> asyncpg.Record | None:
        """The insert in a transaction whose id is known before the statement is sent (module docstring)."""
        txid: int | None = None
        try:
            async with self.acquire_connection() as connection:
                self.log.debug("%s: %s", query, rows)
                async with connection.transaction():
                    txid = await connection.fetchval("SELECT txid_current()")
                    if many:
                        await connection.executemany(query, rows)
                        return None
                    return await connection.fetchrow(query, *rows[0])
        except Exception as exc:
            if txid is not None and is_connection_error(exc) and await self._committed(txid):
                raise AppliedButAnswerLost(
                    f"the connection was lost after the database committed the write ({exc})"
                ) from exc
            raise

    async def _committed(self, txid: int) -> bool:
        """Whether transaction ``txid`` committed, asked on another connection (waiting while the server still
        ends it)."""

        async def status(_: int) -> str | None:
            async with self.acquire_connection() as connection:
                return await connection.fetchval("SELECT txid_status($1)", txid)  # type: ignore[no-any-return]

        for _ in range(200):
            answer = await retrying(status, what="the outcome of a write")
            if answer != "in progress":
                return answer == "committed"
            await asyncio.sleep(0.05)
        return True  # still running after 10 s: never repeat what may yet commit

    async def execute_query(self, query: str, values: list | None = None) -> tuple[int, list[dict]]:
        return await retrying(
            lambda _: super(ResilientAsyncpgClient, self).execute_query(query, values), what="query"
        )

    async def execute_query_dict(self, query: str, values: list | None = None) -> list[dict[str, Any]]:
        return await retrying(
            lambda _: super(ResilientAsyncpgClient, self).execute_query_dict(query, values), what="query"
        )


client_class = ResilientAsyncpgClient
