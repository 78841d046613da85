"""Database start-up: connection settings, migrations and the Tortoise lifecycle.

``migrate(settings)`` brings an empty or older database (SQLite or PostgreSQL) up to the current schema with
the aerich migrations in ``migrations/models/``; ``init_db(settings)`` then connects the models and
``close_db()`` disconnects them. SQLite connections get the pragmas a multi-task server needs (WAL, a busy
timeout, foreign keys) on the one connection Tortoise's SQLite client keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.connection import get_connection
from tortoise.context import TortoiseContext

from aihub.db import node_writes, prepared, wal
from aihub.db.config import tortoise_config
from aihub.settings import Settings

#: ``migrations/`` at the repository root; aerich keeps each app's files in a sub-directory (``models/``).
MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
APP = "models"
SQLITE_ENGINE = "tortoise.backends.sqlite"
POSTGRES_ENGINE = "tortoise.backends.asyncpg"

#: Applied by Tortoise's SQLite client to its connection when it opens it (values in the URL's query win).
SQLITE_PRAGMAS: dict[str, str] = {
    "journal_mode": "WAL",  # readers never block the writer
    "busy_timeout": "5000",  # wait for a lock instead of failing with "database is locked"
    "foreign_keys": "ON",  # ON DELETE CASCADE / SET NULL need it
    "synchronous": "NORMAL",  # safe with WAL, far fewer fsyncs
    # checkpoints run in the background (aihub.db.wal), not in a node's status write; this is the fallback
    "wal_autocheckpoint": str(wal.FALLBACK_PAGES),
    "journal_size_limit": str(wal.WAL_SIZE_LIMIT),
}

#: Key of the PostgreSQL advisory lock that serialises concurrent ``migrate()`` calls (any int8 works).
_PG_MIGRATION_LOCK = 0x41_49_48_55_42  # "AIHUB"


def database_config(settings: Settings, *, aerich: bool = True) -> dict[str, Any]:
    """The Tortoise config of ``settings`` with the default connection expanded and SQLite pragmas added
    (``aerich``: with aerich's migration table, see :func:`aihub.db.config.tortoise_config`)."""
    config = tortoise_config(settings, aerich=aerich)
    url = config["connections"]["default"]
    connection = expand_db_url(url)
    if connection["engine"] == POSTGRES_ENGINE:
        connection["engine"] = "aihub.db.pg"  # the same, with lost connections retried
    if connection["engine"] == SQLITE_ENGINE:
        credentials = connection["credentials"]
        given = parse_qs(urlsplit(url).query)  # (Tortoise fills in defaults of its own: ours win over those)
        credentials.update((k, v) for k, v in SQLITE_PRAGMAS.items() if k not in given)
    config["connections"]["default"] = connection
    return config


def sqlite_file(settings: Settings) -> Path | None:
    """The SQLite database file of ``settings``; None for PostgreSQL or an in-memory database."""
    return _sqlite_path(database_config(settings, aerich=False))


def _sqlite_path(config: dict[str, Any]) -> Path | None:
    connection = config["connections"]["default"]
    if connection["engine"] != SQLITE_ENGINE:
        return None
    file_path = connection["credentials"]["file_path"]
    return None if file_path == ":memory:" else Path(file_path)


def _ensure_dirs(settings: Settings, config: dict[str, Any]) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if (path := _sqlite_path(config)) is not None:
        # SQLite creates the file but not its directory
        path.parent.mkdir(parents=True, exist_ok=True)


def _forget_cached_queries() -> None:
    # Tortoise caches each model's INSERT/DELETE SQL per connection *name*, not per dialect: a process that
    # switches databases (tests, tools) would send SQLite's "?" placeholders to PostgreSQL.
    EXECUTOR_CACHE.clear()


async def init_db(settings: Settings) -> None:
    """Connect the models to the database of ``settings`` (the schema must exist: call ``migrate`` first).

    The Tortoise context is also made the process-wide fallback, so tasks that did not inherit it (ASGI
    requests next to the lifespan task) find it too.
    """
    config = database_config(settings, aerich=False)
    _ensure_dirs(settings, config)
    _forget_cached_queries()
    await Tortoise.init(config=config, _enable_global_fallback=True)


async def close_db() -> None:
    """Close the connections opened by ``init_db`` and the side connections to them (a no-op when there are
    none). The side connections first: they are kept by client, and a closed client may be gone."""
    prepared.side_readers.close_all()
    node_writes.side_writers.close_all()
    await Tortoise.close_connections()


def migrations_dir() -> Path:
    """The directory aerich reads this app's migration files from."""
    path = MIGRATIONS_DIR / APP
    if not path.is_dir():
        raise RuntimeError(f"migrations not found at {path}: run AIHub from its source tree")
    return path


async def migrate(settings: Settings) -> list[str]:
    """Apply the migrations the database of ``settings`` lacks; returns their file names (oldest first).

    Works on an empty database and is idempotent. Concurrent callers (a server and a CLI starting together)
    are serialised, so each migration is applied exactly once. Runs in its own Tortoise context, so it
    neither needs nor disturbs one opened by ``init_db``.
    """
    config = database_config(settings)
    _ensure_dirs(settings, config)
    migrations_dir()
    _forget_cached_queries()
    if await _up_to_date(settings):
        return []
    from aerich import Command  # (imported only when there is something to apply: a fifth of a start-up)

    async with TortoiseContext():
        command = Command(tortoise_config=config, app=APP, location=str(MIGRATIONS_DIR))
        async with command, _migration_lock(config):
            return await command.upgrade(run_in_transaction=True)


def migration_files() -> set[str]:
    """The names of the migration files, as aerich records them once applied."""
    return {p.name for p in migrations_dir().glob("*.py") if p.name[0].isdigit()}


async def _up_to_date(settings: Settings) -> bool:
    """Whether every migration file is recorded as applied: one query, without aerich. Anything unexpected
    (no database yet, no table) is "no", and aerich, under the migration lock, decides."""
    try:
        async with TortoiseContext() as ctx:
            await ctx.init(config=database_config(settings, aerich=False))
            rows = await ctx.db().execute_query_dict("SELECT version FROM aerich WHERE app = 'models'")
    except Exception:
        return False
    finally:
        _forget_cached_queries()
    return migration_files() <= {row["version"] for row in rows}


@contextlib.asynccontextmanager
async def _migration_lock(config: dict[str, Any]) -> AsyncIterator[None]:
    path = _sqlite_path(config)
    if path is not None:
        async with _file_lock(path.with_name(path.name + ".migrate-lock")):
            yield
        return
    connection = get_connection("default")
    if connection.schema_generator.DIALECT != "postgres":
        yield
        return
    async with _pg_advisory_lock(connection):
        yield


@contextlib.asynccontextmanager
async def _pg_advisory_lock(connection: BaseDBAsyncClient) -> AsyncIterator[None]:
    # A session lock lives on one connection: hold a pool connection for the whole upgrade.
    async with connection.acquire_connection() as raw:
        await raw.execute("SELECT pg_advisory_lock($1)", _PG_MIGRATION_LOCK)
        try:
            yield
        finally:
            await raw.execute("SELECT pg_advisory_unlock($1)", _PG_MIGRATION_LOCK)


@contextlib.asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
