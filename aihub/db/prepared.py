"""Selects whose SQL is made once: the query builder's SQL and parameter order for a shape of query, reused.

Tortoise builds a query's SQL afresh on every call (pypika copies and string formatting): for a request that
runs one small query (``run(id) { status }``) that was a third of its cost (issue 18). A :class:`PreparedSelect`
asks the query builder once per database dialect and *shape* (e.g. "a non-admin's visible run"), with
distinct sentinel numbers as its parameters, keeps the SQL, and learns which parameter is which sentinel; later
calls only fill in the parameters and turn the rows into models the way Tortoise does (``_init_from_db``).
Queries with joins that select related models or prefetches are not supported (the builder is used for them).

On SQLite (a file in WAL mode, outside a transaction) a prepared select is read on the event loop's thread from
a read-only side connection to the same file (:class:`SideReaders`) instead of through aiosqlite's thread:
a primary-key read takes microseconds, while the hand-off to aiosqlite's thread and back (two wake-ups and the
GIL passed between threads, which waits up to the 5 ms switch interval while the loop is busy) capped a status
poll at about 800 requests a second (issue 18). The side connection sees what is committed, as a reader on
another connection does in WAL mode (never a writer's uncommitted rows; it does not queue behind a write
transaction holding Tortoise's lock); a query inside a transaction uses the transaction's connection. Any
error of the side connection (busy, a schema change) makes that call take the ordinary path. On PostgreSQL,
outside a transaction, it is read on a reader connection of its own, without the pool's acquire and session
reset (:mod:`aihub.db.pg_reads`).
"""

from __future__ import annotations

import datetime
import sqlite3
import sys
import weakref
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from tortoise.backends.sqlite.client import SqliteClient
from tortoise.fields import data as tortoise_data_fields
from tortoise.fields.data import DatetimeField
from tortoise.models import Model
from tortoise.queryset import QuerySet

M = TypeVar("M", bound=Model)

#: sentinel parameter values: large negative numbers no real row id or count takes
SENTINEL_BASE = -7_300_000_000


class _Param(NamedTuple):
    name: str | None  # a named parameter, or None for a constant of the shape
    value: object


class PreparedSelect(Generic[M]):
    """``build(**sentinels)`` returns the queryset of one shape; its integer parameters are named."""

    def __init__(self, model: type[M], build: Callable[..., QuerySet[M]]) -> None:
        self.model = model
        self.build = build
        self._prepared: dict[tuple[str, Hashable], tuple[str, list[_Param]]] = {}
        #: the model's timestamp columns (parsed through ``_parsed_timestamp``)
        self._timestamps: list[str] | None = None

    def _prepare(self, shape: Hashable, names: list[str]) -> tuple[str, list[_Param]]:
        sentinels = {name: SENTINEL_BASE - i for i, name in enumerate(names)}
        queryset = self.build(**sentinels)
        queryset._choose_db_if_not_chosen()  # type: ignore[attr-defined]
        queryset._make_query()
        if len(queryset._select_related_idx) > 1 or queryset._prefetch_map or queryset._annotations:  # type: ignore[attr-defined]
            raise ValueError("a prepared select takes plain selects only")
        sql, params = queryset.query.get_parameterized_sql()
        by_value = {v: k for k, v in sentinels.items()}
        # a parameter is a named one (its sentinel) or a constant of the shape (kept as it is)
        prepared = []
        for p in params:
            name = by_value.get(p) if type(p) is int else None
            prepared.append(_Param(name, p))
        return sql, prepared

    async def fetch(self, shape: Hashable, values: Mapping[str, int]) -> list[M]:
        """The rows of the query of ``shape`` with ``values`` for its named parameters."""
        db = self.model._meta.db
        key = (db.capabilities.dialect, shape)
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepared[key] = self._prepare(shape, sorted(values))
        sql, params = prepared
        args = [p.value if p.name is None else values[p.name] for p in params]
        kind = type(db)
        rows: Sequence[Any] | None = None
        if kind is SqliteClient:
            rows = side_readers.read(db, sql, args)
        elif kind is getattr(sys.modules.get("aihub.db.pg"), "ResilientAsyncpgClient", None):
            # (not a transaction's client: that reads on its connection; aihub.db.pg, and asyncpg, are
            # imported, by Tortoise, for PostgreSQL only)
            rows = await db.fetch_prepared(sql, args)
        if rows is None:
            _, rows = await db.execute_query(sql, args)
        if self._timestamps is None:
            self._timestamps = [
                field.source_field or name
                for name, field in self.model._meta.fields_map.items()
                if isinstance(field, DatetimeField)
            ]
        models = []
        for row in rows:
            values = dict(row)
            for column in self._timestamps:
                text = values.get(column)
                if type(text) is str:
                    values[column] = _parsed_timestamp(text)
            models.append(self.model._init_from_db(**values))
        return models


#: timestamps as SQLite stores them (text) -> parsed, the way Tortoise parses them (the same function): a
#: polled run's timestamps are parsed once, not on every poll (``datetime`` objects are immutable; Tortoise
#: still applies its time zone setting to them in ``to_python_value``)
_TIMESTAMPS: dict[str, datetime.datetime] = {}


def _parsed_timestamp(text: str) -> datetime.datetime:
    parsed = _TIMESTAMPS.get(text)
    if parsed is None:
        if len(_TIMESTAMPS) >= 4096:
            _TIMESTAMPS.clear()
        parsed = _TIMESTAMPS[text] = tortoise_data_fields.parse_datetime(text)
    return parsed


class SideConnections:
    """A connection of its own per SQLite client, for work done on the event loop's thread (see the module
    docstring and :mod:`aihub.db.node_writes`): opened by ``open_side`` on first use, replaced when the client
    reconnects, closed by :meth:`close_all`; ``enabled`` off (tests compare both ways), none is given and the
    work takes the ordinary path."""

    def __init__(self, open_side: Callable[[SqliteClient], sqlite3.Connection | None]) -> None:
        self.enabled = True
        self._open = open_side
        self._by_client: weakref.WeakKeyDictionary[SqliteClient, tuple[Any, sqlite3.Connection | None]] = (
            weakref.WeakKeyDictionary()
        )

    def connection(self, db: SqliteClient) -> sqlite3.Connection | None:
        """``db``'s side connection, or None: it has none (not a file in WAL mode, not connected, disabled)."""
        live = db._connection
        if not self.enabled or live is None:
            return None
        entry = self._by_client.get(db)
        if entry is None or entry[0] is not live:
            if entry is not None and entry[1] is not None:
                entry[1].close()
            entry = (live, self._open(db))
            self._by_client[db] = entry
        return entry[1]

    def close_all(self) -> None:
        """Close every side connection (the databases are being closed)."""
        entries = list(self._by_client.values())
        self._by_client.clear()
        for _, conn in entries:
            if conn is not None:
                conn.close()


class SideReaders(SideConnections):
    """A read-only connection per SQLite client (module docstring)."""

    def __init__(self) -> None:
        super().__init__(lambda db: _open_reader(db.filename))
        #: reads answered by a side connection (the tests check this path is taken)
        self.reads = 0

    def read(self, db: SqliteClient, sql: str, args: list[Any]) -> Sequence[Any] | None:
        """The rows of ``sql`` read on this thread, or None: read them the ordinary way."""
        conn = self.connection(db)
        if conn is None:
            return None
        try:
            rows = conn.execute(sql, args).fetchall()
        except sqlite3.Error:
            return None
        self.reads += 1
        return rows


def open_side(filename: str, pragmas: dict[str, str]) -> sqlite3.Connection | None:
    """A second connection to ``filename`` for the event loop's thread, with ``pragmas`` and no wait for a lock
    (``busy_timeout=0``), if it is a database file (not ``:memory:``, not a URI) in WAL mode, where readers
    never wait for writers; else None (nothing left open)."""
    if not filename or filename == ":memory:" or filename.startswith("file:"):
        return None
    conn = None
    try:
        conn = sqlite3.connect(filename, isolation_level=None, check_same_thread=False)
        for pragma, value in {**pragmas, "busy_timeout": "0"}.items():
            conn.execute(f"PRAGMA {pragma}={value}")
        if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            return conn
    except sqlite3.Error:
        pass
    if conn is not None:
        conn.close()
    return None


def _open_reader(filename: str) -> sqlite3.Connection | None:
    """A read-only side connection to ``filename`` (see :func:`open_side`)."""
    conn = open_side(filename, {"query_only": "ON"})
    if conn is not None:
        conn.row_factory = sqlite3.Row
    return conn


side_readers = SideReaders()
