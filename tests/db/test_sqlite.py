"""SQLite is configured for a server with concurrent tasks: WAL, a busy timeout, enforced foreign keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from tortoise.connection import get_connection
from tortoise.transactions import in_transaction

from aihub.db.setup import database_config
from aihub.settings import Settings


async def _pragma(name: str) -> object:
    rows = await get_connection("default").execute_query_dict(f"PRAGMA {name}")
    return next(iter(rows[0].values()))


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
async def test_the_connection_in_use_has_the_pragmas(db: Settings) -> None:
    assert await _pragma("journal_mode") == "wal"
    assert await _pragma("busy_timeout") == 5000
    assert await _pragma("foreign_keys") == 1
    assert await _pragma("synchronous") == 1  # NORMAL
    async with in_transaction() as conn:
        # a transaction runs on the same connection, with the same settings
        assert (await conn.execute_query_dict("PRAGMA busy_timeout"))[0]["timeout"] == 5000


async def test_the_default_location_gets_the_pragmas_too(sqlite_db: Settings) -> None:
    assert await _pragma("journal_mode") == "wal"
    assert await _pragma("busy_timeout") == 5000
    assert (sqlite_db.data_dir / "aihub.sqlite3").is_file()


def test_pragmas_given_in_the_url_win(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/x.sqlite3?busy_timeout=20000"
    connection = database_config(Settings(data_dir=tmp_path, database_url=url))["connections"]["default"]
    credentials = connection["credentials"]
    assert credentials["busy_timeout"] == "20000"
    assert credentials["synchronous"] == "NORMAL"
