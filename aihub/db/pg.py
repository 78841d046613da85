"""Tortoise's asyncpg engine, with statements outside a transaction retried on a lost connection.

Selected for every ``postgres://`` URL by :func:`aihub.db.setup.database_config` (Tortoise loads an engine module
by name and takes its ``client_class``). A statement of its own — a read, or a one-statement write in autocommit —
runs again on a fresh pooled connection when the connection died under it (:mod:`aihub.db.retry`). Statements in a
transaction are not retried one by one: the transaction is rolled back whole, and the code that opened it retries
it (``aihub.services.status``, ``aihub.services.capacity``).
"""

from __future__ import annotations

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
from tortoise.connection import get_connections
from tortoise.exceptions import TransactionManagementError

from aihub.db.retry import is_connection_error, retrying

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
    def acquire_connection(self) -> _Connection:  # type: ignore[override]
        return _Connection(self, self._pool_init_lock)

    def _in_transaction(self) -> TransactionContext:
        return _TransactionContext(TransactionWrapper(self), self._pool_init_lock)

    async def execute_insert(self, query: str, values: list) -> asyncpg.Record | None:
        return await retrying(
            lambda _: super(ResilientAsyncpgClient, self).execute_insert(query, values), what="insert"
        )

    async def execute_many(self, query: str, values: list) -> None:
        await retrying(
            lambda _: super(ResilientAsyncpgClient, self).execute_many(query, values), what="write"
        )

    async def execute_query(self, query: str, values: list | None = None) -> tuple[int, list[dict]]:
        return await retrying(
            lambda _: super(ResilientAsyncpgClient, self).execute_query(query, values), what="query"
        )

    async def execute_query_dict(self, query: str, values: list | None = None) -> list[dict[str, Any]]:
        return await retrying(
            lambda _: super(ResilientAsyncpgClient, self).execute_query_dict(query, values), what="query"
        )


client_class = ResilientAsyncpgClient
