"""SQLite's WAL checkpoints run in the background, not inside the server's commits (``aihub.db.wal``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from pathlib import Path

import pytest
from tortoise.connection import get_connection

from aihub.db import wal
from aihub.db.setup import sqlite_file
from aihub.runtime import open_runtime
from aihub.settings import Settings

ROWS = 1_500  # a page each: past SQLite's default autocheckpoint (1,000 pages), below the fallback


async def _pragma(name: str) -> object:
    rows = await get_connection("default").execute_query_dict(f"PRAGMA {name}")
    return next(iter(rows[0].values()))


def _rows_in_the_database_file(path: Path) -> int:
    """Rows of ``filler`` in the database file itself (what checkpoints copied there), the WAL ignored; -1
    while that is not readable yet (no table; a checkpoint copying pages: this reader takes no lock)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)) as conn:
        try:
            return conn.execute("SELECT count(*) FROM filler").fetchone()[0]
        except sqlite3.DatabaseError:
            return -1


async def _until(predicate: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_a_servers_writes_reach_the_database_file_through_the_background_checkpoints(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    async with open_runtime(settings, run_engine=False):
        # the writing connection checkpoints only past the fallback, so a node's status write never pays one
        assert await _pragma("wal_autocheckpoint") == wal.FALLBACK_PAGES
        assert await _pragma("journal_size_limit") == wal.WAL_SIZE_LIMIT
        conn = get_connection("default")
        await conn.execute_script("CREATE TABLE filler (x BLOB)")
        for _ in range(ROWS // 100):
            await conn.execute_script(
                "INSERT INTO filler SELECT randomblob(3000) FROM"
                " (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) SELECT i FROM n)"
            )
        path = sqlite_file(settings)
        assert path is not None
        await _until(lambda: _rows_in_the_database_file(path) == ROWS, "the checkpoints to copy every row")


async def test_a_failed_checkpoint_is_logged_once_and_the_next_ones_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "x.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x)")
    checkpointer = wal.checkpointer_for(path)
    assert checkpointer is not None
    await checkpointer.close()  # (this test drives its own, quicker)
    checkpointer = wal.Checkpointer(path, interval=0.01)
    real, failing = checkpointer.checkpoint, 3

    def flaky() -> tuple[int, int, int]:
        nonlocal failing
        if failing:
            failing -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return real()

    checkpointer.checkpoint = flaky  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="aihub.db"):
        checkpointer.start()
        try:
            await _until(lambda: checkpointer.last is not None, "a checkpoint after the failures")
        finally:
            await checkpointer.close()
    warnings = [r.getMessage() for r in caplog.records if "checkpoint" in r.getMessage()]
    assert warnings == [f"background checkpoint of {path} failed: disk I/O error"]
    assert checkpointer.failures == 0


def test_only_a_sqlite_file_in_wal_mode_gets_a_checkpointer(tmp_path: Path) -> None:
    assert sqlite_file(Settings(data_dir=tmp_path, database_url="postgres://u@127.0.0.1:5432/x")) is None
    assert sqlite_file(Settings(data_dir=tmp_path, database_url="sqlite://:memory:")) is None
    assert sqlite_file(Settings(data_dir=tmp_path)) == tmp_path / "aihub.sqlite3"
    assert wal.checkpointer_for(None) is None
    rollback = tmp_path / "rollback.sqlite3"
    with sqlite3.connect(rollback) as conn:
        conn.execute("CREATE TABLE t (x)")  # the default journal: no WAL to checkpoint
    assert wal.checkpointer_for(rollback) is None
