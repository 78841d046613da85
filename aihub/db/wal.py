"""SQLite's WAL checkpoints, off the commit path.

In WAL mode a commit appends to ``<db>-wal``; a *checkpoint* copies those pages into the database file and
fsyncs it. By default the connection that commits runs one itself whenever the WAL has grown past 1,000 pages —
inside that commit. The server has one writing connection (Tortoise's, on aiosqlite's thread), so every few
hundred transactions one node's status write also paid a checkpoint and its fsync: 5-10 ms on this machine's
virtual disk, and the whole of the hand-off's p99 (issue 18: the 200-node chain's p99 went 9.0 -> 5.6 ms with
the checkpoints moved out).

So the writing connection checkpoints only as a fallback, past :data:`FALLBACK_PAGES` (a WAL of ~40 MiB, should
the checkpointer below be stopped or starved), and a :class:`Checkpointer` runs a ``PASSIVE`` checkpoint every
:data:`INTERVAL` seconds on a connection of its own, in a worker thread. A passive checkpoint never waits for a
reader or a writer: commits go on while it copies and fsyncs. Nothing is less durable: with
``synchronous=NORMAL`` a commit is as durable as before (in the WAL, fsynced at the next checkpoint); only who
runs the checkpoint changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from pathlib import Path

log = logging.getLogger("aihub.db")

#: pages of WAL after which the writing connection checkpoints in its own commit (SQLite's default: 1,000)
FALLBACK_PAGES = 10_000
#: seconds between two passive checkpoints
INTERVAL = 0.5
#: bytes the WAL file keeps after a checkpoint (Tortoise's default, 16 KiB, made each restart of the WAL
#: truncate the file and the next commits grow it again, block by block, in the commit path)
WAL_SIZE_LIMIT = 64 << 20


class Checkpointer:
    """Passive checkpoints of one SQLite database in WAL mode, every ``interval`` seconds, in a worker thread."""

    def __init__(self, path: Path, interval: float = INTERVAL) -> None:
        self.path = path
        self.interval = interval
        #: the last checkpoint's answer: (busy, frames in the WAL, frames checkpointed); None before the first
        self.last: tuple[int, int, int] | None = None
        self.failures = 0  # checkpoints that failed (logged once in a row)
        self._conn: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"checkpoint {self.path.name}")

    async def close(self) -> None:
        """Stop, once a checkpoint under way has ended (a cancel would leave it running in its thread, on the
        connection closed here)."""
        task, self._task = self._task, None
        if task is not None:
            self._stop.set()
            await task
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.to_thread(conn.close)

    async def _loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.interval):
                    await self._stop.wait()
                return
            except TimeoutError:
                pass
            try:
                await asyncio.to_thread(self.checkpoint)
            except sqlite3.Error as exc:
                self.failures += 1
                if self.failures == 1:  # (the writer's fallback still bounds the WAL)
                    log.warning("background checkpoint of %s failed: %s", self.path, exc)
            else:
                self.failures = 0

    def checkpoint(self) -> tuple[int, int, int]:
        """One passive checkpoint (blocking: call it in a worker thread); SQLite's answer, as :attr:`last`."""
        if self._conn is None:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        busy, frames, done = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.last = (busy, frames, done)
        return self.last


def checkpointer_for(path: Path | None) -> Checkpointer | None:
    """A started :class:`Checkpointer` for the SQLite database file at ``path``, if it is in WAL mode."""
    if path is None:
        return None
    with contextlib.closing(sqlite3.connect(path)) as conn:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if str(mode).lower() != "wal":
        return None
    checkpointer = Checkpointer(path)
    checkpointer.start()
    return checkpointer
