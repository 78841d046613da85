"""A node's status transaction: its statements written once per database dialect, run as one transaction.

A node's transition writes its row (compare-and-set on the status it was read with), its attempt (new or ended)
and its events, in one transaction. Through Tortoise's query builder and ``Model.save``/``bulk_create`` that cost
most of the engine's own CPU per node (issue 18); here the SQL is made once per dialect (Tortoise's own cache of
INSERTs is keyed by connection name, not dialect, and tests open SQLite and PostgreSQL in one process) and the
values are converted by the fields' own ``to_db_value``, as Tortoise does.

Outside a transaction the caller opened, the transaction costs one round trip instead of five or six:

- on SQLite it runs at once on the event loop's thread, on a side connection (:class:`SideWriters`), while
  Tortoise's connection is idle and no other process writes; otherwise in one call to aiosqlite's thread
  (``BEGIN``, the statements, ``COMMIT``), under the client's lock, which Tortoise's own transactions and
  statements take too;
- on PostgreSQL it is one statement: the compare-and-set ``UPDATE ... RETURNING`` in a ``WITH``, the attempt's
  and the events' writes selecting from it (so they write nothing when it moved no row), atomic as any statement.
  It is sent without the engine's own retry of single statements (``db/pg.py``): a lost connection is retried by
  the caller, which first asks whether the lost try committed (``services.status``).

Inside the caller's transaction it is an ordinary ``in_transaction`` (a savepoint) with the prebuilt statements.
"""

from __future__ import annotations

import contextlib
import datetime
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tortoise import timezone
from tortoise.backends.base.client import BaseDBAsyncClient, TransactionalDBClient
from tortoise.backends.sqlite.client import SqliteClient
from tortoise.exceptions import IntegrityError, OperationalError
from tortoise.fields import (
    BigIntField,
    CharField,
    DatetimeField,
    Field,
    IntField,
    JSONField,
    SmallIntField,
    TextField,
)
from tortoise.fields.data import JSON_DUMPS, CharEnumFieldInstance
from tortoise.models import Model
from tortoise.transactions import in_transaction
from tortoise.validators import MaxLengthValidator

if TYPE_CHECKING:
    from tortoise.backends.asyncpg.client import AsyncpgDBClient

from aihub.db.models import Attempt, NodeEvent, NodeRun
from aihub.db.prepared import SideConnections, open_side
from aihub.domain.status import NodeStatus

#: the node row's fields a status writer sets (everything but the run, the name and the id)
NODE_FIELDS = (
    "status",
    "message",
    "attempt",
    "retry_count",
    "auto_retries",
    "inputs",
    "outputs",
    "exit_code",
    "cache_key",
    "cache_source_id",
    "started_at",
    "finished_at",
)
#: what an ended attempt's write sets: the rest (its node, number, executor and the executor's handle, which
#: is the largest value of the row) was written when it started and does not change
ATTEMPT_END_FIELDS = ("status", "exit_code", "message", "started_at", "finished_at")
#: a node event's columns, in the order of :func:`event_row`
EVENT_FIELDS = ("run_id", "node", "attempt", "kind", "message", "created_at")

_MARK: dict[str, Callable[[int], str]] = {"sqlite": lambda i: "?", "postgres": lambda i: f"${i}"}


@dataclass(frozen=True)
class Statements:
    """The SQL of one dialect."""

    node_cas: str  # UPDATE node_run SET <NODE_FIELDS> WHERE id=? AND status=?
    event_insert: str  # INSERT INTO node_event (<EVENT_FIELDS>) VALUES (...)
    attempt_insert: str  # INSERT INTO attempt (<attempt_fields>) VALUES (...) [RETURNING id: PostgreSQL]
    attempt_update: str  # UPDATE attempt SET <ATTEMPT_END_FIELDS> WHERE id=?
    attempt_fields: tuple[str, ...]  # an attempt's fields but its id (what ``Model.save`` writes)
    node_insert: str  # INSERT INTO node_run (<node_fields>) VALUES (...)
    node_fields: tuple[str, ...]  # a node row's fields but its id


_STATEMENTS: dict[str, Statements] = {}


def _update(
    model: type[Model], fields: Sequence[str], where: Sequence[str], mark: Callable[[int], str]
) -> str:
    columns = model._meta.fields_db_projection
    sets = ",".join(f'"{columns[f]}"={mark(i)}' for i, f in enumerate(fields, 1))
    conditions = " AND ".join(f'"{columns[f]}"={mark(i)}' for i, f in enumerate(where, len(fields) + 1))
    return f'UPDATE "{model._meta.db_table}" SET {sets} WHERE {conditions}'


def _names(model: type[Model], fields: Sequence[str]) -> str:
    columns = model._meta.fields_db_projection
    return ",".join(f'"{columns[f]}"' for f in fields)


def _insert(model: type[Model], fields: Sequence[str], mark: Callable[[int], str]) -> str:
    names = _names(model, fields)
    values = ",".join(mark(i) for i in range(1, len(fields) + 1))
    return f'INSERT INTO "{model._meta.db_table}" ({names}) VALUES ({values})'


def _all_but_id(model: type[Model]) -> tuple[str, ...]:
    return tuple(f for f in model._meta.fields_db_projection if f != model._meta.pk_attr)


def statements(dialect: str) -> Statements:
    """The statements in ``dialect`` (SQLite and PostgreSQL, the databases the platform runs on)."""
    if dialect not in _STATEMENTS:
        if dialect not in _MARK:
            raise NotImplementedError(f"no node statements for the {dialect} dialect")
        mark = _MARK[dialect]
        attempt_fields = _all_but_id(Attempt)
        node_fields = _all_but_id(NodeRun)
        _STATEMENTS[dialect] = Statements(
            node_cas=_update(NodeRun, NODE_FIELDS, ("id", "status"), mark),
            event_insert=_insert(NodeEvent, EVENT_FIELDS, mark),
            attempt_insert=_insert(Attempt, attempt_fields, mark)
            + (f' RETURNING "{Attempt._meta.db_pk_column}"' if dialect == "postgres" else ""),
            attempt_update=_update(Attempt, ATTEMPT_END_FIELDS, ("id",), mark),
            attempt_fields=attempt_fields,
            node_insert=_insert(NodeRun, node_fields, mark),
            node_fields=node_fields,
        )
    return _STATEMENTS[dialect]


_ONE_STATEMENT: dict[tuple[str, int], str] = {}


def pg_one_statement(attempt: str, events: int) -> str:
    """The whole transition as one PostgreSQL statement; ``attempt`` is "", "insert" or "update", ``events`` how
    many event rows follow. Its parameters: the node's (as ``node_cas``), the attempt's, the events' in order.
    It answers one row: ``changed`` (0: another status, nothing written) and ``attempt_id``."""
    key = (attempt, events)
    if key not in _ONE_STATEMENT:
        sql = statements("postgres")
        number = len(NODE_FIELDS) + 2
        parts = [f'n AS ({sql.node_cas} RETURNING "id")']
        answer = "NULL::BIGINT"
        if attempt == "insert":  # INSERT ... SELECT: its parameters take the types of the columns
            marks = ",".join(f"${number + i}" for i in range(1, len(sql.attempt_fields) + 1))
            into = f'"{Attempt._meta.db_table}" ({_names(Attempt, sql.attempt_fields)})'
            parts.append(f'a AS (INSERT INTO {into} SELECT {marks} FROM n RETURNING "id")')
            number += len(sql.attempt_fields)
        elif attempt == "update":
            update = _update(Attempt, ATTEMPT_END_FIELDS, ("id",), lambda i: f"${number + i}")
            parts.append(f'a AS ({update} AND EXISTS (SELECT 1 FROM n) RETURNING "id")')
            number += len(ATTEMPT_END_FIELDS) + 1
        if attempt:
            answer = '(SELECT "id" FROM a)'
        if events:  # rows of VALUES take no type from the columns: each is cast to its column's type
            fields_map = NodeEvent._meta.fields_map
            types = [fields_map[f].get_for_dialect("postgres", "SQL_TYPE") for f in EVENT_FIELDS]
            rows = []
            for row in range(events):
                first = number + row * len(EVENT_FIELDS)
                casts = ",".join(f"${first + i}::{t}" for i, t in enumerate(types, 1))
                rows.append(f"({casts},{row})")
            names = _names(NodeEvent, EVENT_FIELDS)
            parts.append(
                f'e AS (INSERT INTO "{NodeEvent._meta.db_table}" ({names}) SELECT {names} FROM n, '
                f'(VALUES {",".join(rows)}) AS v({names},"ord") ORDER BY v."ord")'
            )
        _ONE_STATEMENT[key] = (
            f"WITH {', '.join(parts)} SELECT (SELECT count(*) FROM n) AS changed, {answer} AS attempt_id"
        )
    return _ONE_STATEMENT[key]


#: converts one value of a field to its database value: (value, model instance or class) -> database value
Convert = Callable[[Any, Any], Any]


def converter(field: Field) -> Convert:
    """``field.to_db_value``, with a fast path for the values a status writer nearly always has — an int, a
    str within the field's length, a member of the field's enum, a dict or list for JSON, an aware datetime,
    None where the field takes it — that gives the same value and lets through exactly what the field's checks
    do; anything else goes to ``to_db_value`` itself (which converts it, or raises as it would have). Tortoise's
    generic conversion (``isinstance`` checks, validators called in a loop, ``hasattr`` on the instance) was
    about a tenth of the engine's CPU per node (issue 18)."""
    slow = field.to_db_value
    limit: int | None = None
    if field.validators:
        if len(field.validators) != 1 or type(field.validators[0]) is not MaxLengthValidator:
            return slow
        limit = field.validators[0].max_length
    # None passes the validators of a nullable field (they are skipped), and of a field without any
    none_ok = field.null or limit is None
    kind = type(field)
    if kind is CharEnumFieldInstance:
        enum_type = field.enum_type  # type: ignore[attr-defined]
        members = {m: str(m.value) for m in enum_type if limit is None or len(m.value) <= limit}

        def enum_value(value: Any, instance: Any) -> Any:
            if value.__class__ is enum_type and value in members:
                return members[value]
            return slow(value, instance)

        return enum_value
    if kind in (CharField, TextField):

        def text(value: Any, instance: Any) -> Any:
            if value.__class__ is str and (limit is None or len(value) <= limit):
                return value
            if value is None and none_ok:
                return None
            return slow(value, instance)

        return text
    if limit is not None:
        return slow
    if kind in (IntField, BigIntField, SmallIntField):

        def integer(value: Any, instance: Any) -> Any:
            return value if value is None or value.__class__ is int else slow(value, instance)

        return integer
    if kind is JSONField:
        encoder = field.encoder  # type: ignore[attr-defined]
        default = encoder is JSON_DUMPS  # Tortoise's own: an empty dict or list is "{}" or "[]"

        def json_value(value: Any, instance: Any) -> Any:
            if value.__class__ is dict:
                return "{}" if default and not value else encoder(value)
            if value.__class__ is list:
                return "[]" if default and not value else encoder(value)
            return None if value is None else slow(value, instance)

        return json_value
    if kind is DatetimeField and not field.auto_now and not field.auto_now_add:  # type: ignore[attr-defined]

        def moment(value: Any, instance: Any) -> Any:
            if value is None or (value.__class__ is datetime.datetime and value.utcoffset() is not None):
                return value
            return slow(value, instance)

        return moment
    return slow


_CONVERTERS: dict[tuple[type[Model], tuple[str, ...]], tuple[dict[str, Field], list[Convert]]] = {}


def converters(model: type[Model], fields: tuple[str, ...]) -> list[Convert]:
    """The converters of ``model``'s ``fields``, made again if the model's fields were (``Tortoise.init``)."""
    fields_map = model._meta.fields_map
    cached = _CONVERTERS.get((model, fields))
    if cached is None or cached[0] is not fields_map:
        cached = _CONVERTERS[model, fields] = (fields_map, [converter(fields_map[f]) for f in fields])
    return cached[1]


def _values(obj: Model, fields: tuple[str, ...]) -> list[Any]:
    return [
        convert(getattr(obj, f), obj)
        for f, convert in zip(fields, converters(type(obj), fields), strict=True)
    ]


_EVENT_INPUTS = EVENT_FIELDS[:-1]  # created_at is set here


def event_row(run_id: int, node: str | None, attempt: int | None, kind: str, message: str) -> list[Any]:
    """A node event's values, converted (and checked: lengths) as ``NodeEvent``'s fields do; ``created_at`` is
    now, as its ``auto_now_add`` would set it."""
    run_c, node_c, attempt_c, kind_c, message_c = converters(NodeEvent, _EVENT_INPUTS)
    return [
        run_c(run_id, NodeEvent),
        node_c(node, NodeEvent),
        attempt_c(attempt, NodeEvent),
        kind_c(kind, NodeEvent),
        message_c(message, NodeEvent),
        timezone.localtime(),
    ]


_STATUS = ("status",)


def _node_values(node: NodeRun, previous: NodeStatus) -> list[Any]:
    """The parameters of ``node_cas``: the node's fields, then its id and the status it was read with."""
    status = converters(NodeRun, _STATUS)[0](previous, node)
    return [*_values(node, NODE_FIELDS), node.id, status]


async def insert_nodes(run_id: int, names: Sequence[str]) -> None:
    """A new run's node rows, one per name, each field but the name as ``NodeRun(run_id=run_id, name=...)``
    sets it (the defaults), in the caller's transaction: one statement, sent once with every row.
    ``bulk_create`` made and converted a model instance per node, 40-60 ms for 1,000 nodes (issue 18)."""
    if not names:
        return
    db: BaseDBAsyncClient = NodeRun._meta.db
    sql = statements(db.capabilities.dialect)
    template = _values(NodeRun(run_id=run_id, name=names[0]), sql.node_fields)
    at = sql.node_fields.index("name")
    name_value = converters(NodeRun, ("name",))[0]
    rows = []
    for name in names:
        row = template.copy()
        row[at] = name_value(name, NodeRun)  # checked as the field checks it (its length)
        rows.append(row)
    await db.execute_many(sql.node_insert, rows)


async def set_node(node: NodeRun, previous: NodeStatus) -> bool:
    """The node row alone, compare-and-set, in the caller's transaction. False: it had another status."""
    db: BaseDBAsyncClient = NodeRun._meta.db
    changed, _ = await db.execute_query(
        statements(db.capabilities.dialect).node_cas, _node_values(node, previous)
    )
    return bool(changed)


@dataclass
class _Transition:
    """What one node transition writes, converted to database values."""

    node: list[Any]  # NODE_FIELDS, then the id and the status it was read with
    attempt: list[Any] | None  # Statements.attempt_fields (inserted), or ATTEMPT_END_FIELDS and the id
    insert_attempt: bool
    events: list[list[Any]]


async def write_transition(
    node: NodeRun,
    previous: NodeStatus,
    attempt: Attempt | None,
    events: list[list[Any]],
) -> bool:
    """Write ``node`` if its row still has status ``previous`` (compare-and-set), with ``attempt`` (inserted when
    new: it gets its id) and ``events`` (rows of :func:`event_row`), all in one transaction. False: the row had
    another status, and nothing was written."""
    db: BaseDBAsyncClient = NodeRun._meta.db
    sql = statements(db.capabilities.dialect)
    insert = attempt is not None and (not attempt._saved_in_db or attempt.pk is None)  # as Model.save decides
    work = _Transition(
        node=_node_values(node, previous),
        attempt=None
        if attempt is None
        else _values(attempt, sql.attempt_fields)
        if insert
        else [*_values(attempt, ATTEMPT_END_FIELDS), attempt.pk],
        insert_attempt=insert,
        events=events,
    )
    if isinstance(db, SqliteClient) and not isinstance(db, TransactionalDBClient):
        written, attempt_id = await _write_sqlite(db, sql, work)
    elif _is_asyncpg(db) and not isinstance(db, TransactionalDBClient):
        written, attempt_id = await _write_postgres(db, work)
    else:
        written, attempt_id = await _write_in_transaction(sql, work)
    if written and attempt is not None and insert:
        attempt.pk, attempt._saved_in_db = attempt_id, True
    return written


class _Stale(Exception):
    """The compare-and-set found another status: the transaction is rolled back."""


async def _write_in_transaction(sql: Statements, work: _Transition) -> tuple[bool, int | None]:
    attempt_id = None
    try:
        async with in_transaction() as conn:
            changed, _ = await conn.execute_query(sql.node_cas, work.node)
            if not changed:
                raise _Stale
            if work.attempt is not None and work.insert_attempt:
                inserted = await conn.execute_insert(sql.attempt_insert, work.attempt)
                attempt_id = inserted if isinstance(inserted, int) else inserted[0]  # SQLite: the rowid
            elif work.attempt is not None:
                await conn.execute_query(sql.attempt_update, work.attempt)
            if work.events:
                await conn.execute_many(sql.event_insert, work.events)
    except _Stale:
        return False, None
    return True, attempt_id


def _is_asyncpg(db: BaseDBAsyncClient) -> bool:
    """A connection of Tortoise's asyncpg client (whose module, and asyncpg, a run on SQLite never imports:
    ``tests/test_startup.py``)."""
    client = sys.modules.get("tortoise.backends.asyncpg.client")
    return client is not None and isinstance(db, client.AsyncpgDBClient)


async def _write_postgres(db: AsyncpgDBClient, work: _Transition) -> tuple[bool, int | None]:
    from tortoise.backends.asyncpg.client import AsyncpgDBClient  # (loaded: ``db`` is one)

    kind = "" if work.attempt is None else "insert" if work.insert_attempt else "update"
    values = [*work.node, *(work.attempt or ()), *(v for row in work.events for v in row)]
    # Tortoise's own statement, not db/pg.py's retried one: see the module's docstring
    _, rows = await AsyncpgDBClient.execute_query(db, pg_one_statement(kind, len(work.events)), values)
    return bool(rows[0]["changed"]), rows[0]["attempt_id"]


class SideWriters(SideConnections):
    """A connection per SQLite client that writes a node's transaction on the event loop's thread.

    Through aiosqlite a status write took 0.6-0.7 ms of wall time for 0.07 ms of SQLite's work: the call goes
    to aiosqlite's thread and its answer comes back to the loop, two wake-ups and the GIL passed twice on two
    busy CPUs. The engine writes a run's statuses one after another (under the run's lock, so that its events
    keep their order), so that wait was on every node's path, 2,000 times a 1,000-node run (issue 18). With
    WAL and ``synchronous=NORMAL`` a commit writes to the WAL and does not fsync (checkpoints run elsewhere:
    :mod:`aihub.db.wal`), so the transaction costs no more on the loop's thread than its hand-off to another.

    Two rules keep it correct next to Tortoise's connection to the same file:

    - it writes only while Tortoise's connection is idle (its lock free: no statement under way, no
      transaction open), in one synchronous step that no other task can interleave. A transaction of
      Tortoise's that read before this commit would otherwise fail at its first write (``SQLITE_BUSY``: its
      snapshot is stale);
    - it never waits for a lock (``busy_timeout=0``, ``BEGIN IMMEDIATE``): when another process writes, the
      transaction goes the ordinary way, on aiosqlite's thread, which waits as Tortoise's statements do.
    """

    def __init__(self) -> None:
        super().__init__(_open_writer)
        #: transactions begun on a side connection (the tests check this path is taken, and when it is not)
        self.writes = 0


def _open_writer(db: SqliteClient) -> sqlite3.Connection | None:
    """A side connection to ``db``'s file with its pragmas (foreign keys, the checkpoint fallback), as Tortoise
    applies them to its own, but no wait for a lock (see :func:`~aihub.db.prepared.open_side`)."""
    pragmas = getattr(db, "pragmas", None)  # (Tortoise's: without them, no side connection)
    if pragmas is None:
        return None
    return open_side(db.filename, {k: str(v) for k, v in pragmas.items() if k != "busy_timeout"})


side_writers = SideWriters()


async def _write_sqlite(db: SqliteClient, sql: Statements, work: _Transition) -> tuple[bool, int | None]:
    lock = getattr(db, "_lock", None)  # (Tortoise's private lock: without it, never on the side)
    if lock is not None and not lock.locked():  # (Tortoise's connection is idle: see SideWriters)
        side = side_writers.connection(db)
        if side is not None:
            done = _write_on_this_thread(side, sql, work)
            if done is not None:
                return done
    with _translated():
        async with db.acquire_connection() as connection:
            return await connection._execute(_transaction, connection._conn, sql, work)


def _write_on_this_thread(
    conn: sqlite3.Connection, sql: Statements, work: _Transition
) -> tuple[bool, int | None] | None:
    """The transaction on the side connection, now; None when it could not begin (another process writes, or
    the connection failed): then it goes the ordinary way."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error:
        return None
    side_writers.writes += 1
    with _translated():
        return _transaction(conn, sql, work, begun=True)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """SQLite's errors as Tortoise's SQLite client translates them."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise IntegrityError(exc) from exc
    except sqlite3.OperationalError as exc:
        raise OperationalError(exc) from exc


def _transaction(
    conn: sqlite3.Connection, sql: Statements, work: _Transition, begun: bool = False
) -> tuple[bool, int | None]:
    """The whole transaction (in aiosqlite's thread, or on a side connection that ``begun`` it), rolled back on a
    stale status or any error."""
    if not begun:
        if conn.in_transaction:  # as Tortoise's begin(): end an implicit transaction first
            conn.commit()
        conn.execute("BEGIN")
    try:
        if not conn.execute(sql.node_cas, work.node).rowcount:
            conn.rollback()
            return False, None
        attempt_id = None
        if work.attempt is not None:
            cursor = conn.execute(
                sql.attempt_insert if work.insert_attempt else sql.attempt_update, work.attempt
            )
            if work.insert_attempt:
                attempt_id = cursor.lastrowid
        if work.events:
            conn.executemany(sql.event_insert, work.events)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return True, attempt_id
