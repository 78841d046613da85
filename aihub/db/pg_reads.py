"""PostgreSQL reads of prepared selects (``aihub.db.prepared``) on a few connections of their own (issue 18).

A status poll reads one row. Through Tortoise's pool that costs a pool acquire, the statement, and on release
asyncpg's session reset — a second round trip (``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
ALL``) that cost the server process as much as the read itself, and PostgreSQL more. :class:`PgReaders` keeps
a few connections per Tortoise client (at most :data:`SIZE`, opened on first use) that only ever run prepared
selects outside any transaction: they carry no session state, so they need no reset, and asyncpg keeps each
statement prepared on each of them (its statement cache), so a read is one round trip. They are read-only
(``default_transaction_read_only``) and see what is committed, as any other connection does; a query inside a
transaction uses the transaction's connection (``aihub.db.prepared``).

Any error of a reader (a lost connection, a schema change, a connect that fails) closes the connection it
happened on, frees its place, and makes that call take the ordinary path — Tortoise's, with its retry on a lost
connection (``aihub.db.pg``) — so the answers and the errors are the ordinary path's: a database that went away
is still ``UNAVAILABLE``. After a failed connect every call takes the ordinary path for a few seconds. A request
cancelled during a read closes that connection too (its protocol state is unknown) and is cancelled as asked.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

log = logging.getLogger("aihub.db")

#: reader connections per client: a read is one short round trip, a few let PostgreSQL answer some requests while
#: the event loop works on others
SIZE = 4
#: seconds without a reader after a connect failed (a server at its ``max_connections``, say): every read would
#: otherwise pay for a failed connect before taking the ordinary path
REST_AFTER_CONNECT_FAILURE = 5.0
#: off: every prepared select goes through Tortoise's pool (the tests compare both)
ENABLED = True
#: the ``application_name`` of the readers (after the configured one, if any): they are told apart in
#: ``pg_stat_activity``
APPLICATION_SUFFIX = "reads"
_CONNECT_PARAMETERS = frozenset(inspect.signature(asyncpg.connect).parameters) - {"loop"}


def connect_options(template: Mapping[str, Any], password: Any) -> dict[str, Any]:
    """``asyncpg.connect`` options for a reader from the pool options Tortoise made (``_template``)."""
    options = {k: v for k, v in template.items() if k in _CONNECT_PARAMETERS}
    settings = dict(options.get("server_settings") or {})
    name = settings.get("application_name")
    settings["application_name"] = f"{name} {APPLICATION_SUFFIX}" if name else f"aihub {APPLICATION_SUFFIX}"
    settings["default_transaction_read_only"] = "on"
    return {**options, "server_settings": settings, "password": password}


class PgReaders:
    """The reader connections of one Tortoise client; ``reads`` counts the reads they answered."""

    def __init__(self, options: dict[str, Any], size: int = SIZE) -> None:
        self._options = options
        #: a free place: an open connection, or None (open one when it is taken)
        self._free: asyncio.Queue[asyncpg.Connection | None] = asyncio.Queue()
        self._size = size
        for _ in range(size):
            self._free.put_nowait(None)
        self._closed = False
        self._resting_until = 0.0
        self.reads = 0
        #: connects tried (the tests check the rest after a failed one)
        self.connects = 0

    async def fetch(self, sql: str, args: Sequence[Any]) -> list[asyncpg.Record] | None:
        """The rows of ``sql`` with ``args``, or None: read them the ordinary way (module docstring)."""
        if self._closed or time.monotonic() < self._resting_until:
            return None
        free = self._free
        connection = free.get_nowait() if free.qsize() else await free.get()
        try:
            if self._closed:
                raise _Closed
            if connection is None:
                connection = await self._open()
            rows: list[asyncpg.Record] = await connection.fetch(sql, *args)
        except BaseException as exc:
            if connection is not None:
                connection.terminate()
            free.put_nowait(None)
            if isinstance(exc, asyncio.CancelledError):
                if _task_cancelled():
                    raise  # this request is being cancelled (not a reader's doing)
            elif not isinstance(exc, Exception):
                raise
            if not isinstance(exc, _Closed):
                log.debug("a PostgreSQL reader failed (%s); the ordinary path reads", exc)
            return None
        if self._closed:  # closed during the read
            connection.terminate()
            connection = None
        free.put_nowait(connection)
        self.reads += 1
        return rows

    async def _open(self) -> asyncpg.Connection:
        self.connects += 1
        try:
            return await asyncpg.connect(**self._options)
        except Exception:
            self._resting_until = time.monotonic() + REST_AFTER_CONNECT_FAILURE
            raise

    async def close(self) -> None:
        """Close the idle readers; one in use is closed when its read ends. Later calls read the ordinary way."""
        self._closed = True
        while self._free.qsize():
            connection = self._free.get_nowait()
            if connection is not None:
                try:
                    await connection.close(timeout=5)
                except Exception:  # lost already, or the server does not answer
                    connection.terminate()
        for _ in range(self._size):  # waiters wake up, see the readers closed and read the ordinary way
            self._free.put_nowait(None)


class _Closed(Exception):
    """The readers were closed while a call waited for a place."""


def _task_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
