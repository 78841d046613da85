"""The cap on stored log bytes per attempt (issue 11, point 7): head and tail kept, the middle dropped with a note
saying how much; writers go on appending; live readers carry on past a compaction."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from aihub.storage.local import COMPACTED_NOTE, LocalLogStore
from aihub.storage.logcap import LogCapper, cap_log_file

LIMIT = 4096


def _lines(first: int, count: int) -> bytes:
    return b"".join(f"line {i:06d}\n".encode() for i in range(first, first + count))


def test_a_log_over_the_limit_keeps_its_head_and_tail(tmp_path: Path) -> None:
    log = tmp_path / "1.log"
    log.write_bytes(_lines(0, 10_000))  # 120,000 bytes
    dropped = cap_log_file(log, LIMIT)
    data = log.read_bytes()
    assert data.startswith(b"line 000000\n")
    assert data.endswith(b"line 009999\n")
    assert dropped == 120_000 - 2 * (LIMIT // 4)
    assert f"[aihub: {dropped} bytes of this log were dropped here".encode() in data
    assert len(data) < LIMIT
    assert cap_log_file(log, LIMIT) == 0  # under the limit now: left alone


def test_repeated_compactions_add_up_what_was_dropped(tmp_path: Path) -> None:
    log = tmp_path / "1.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)  # how the node's shell writes
    try:
        total = 0
        written = 0
        for round_ in range(5):
            chunk = _lines(round_ * 1000, 1000)
            os.write(fd, chunk)
            written += len(chunk)
            total += cap_log_file(log, LIMIT)
        os.write(fd, b"the end\n")
    finally:
        os.close(fd)
    data = log.read_bytes()
    assert data.startswith(b"line 000000\n") and data.endswith(b"line 004999\nthe end\n")
    assert data.count(b"[aihub: ") == 1
    assert f"[aihub: {total} bytes of this log were dropped here".encode() in data
    assert total == written - 2 * (LIMIT // 4)  # the first and the last quarter are kept


async def test_a_live_reader_goes_on_after_a_compaction(tmp_path: Path) -> None:
    logs = LocalLogStore(tmp_path / "logs", poll_interval=0.01)
    path = logs.path(1, "n", 1)
    path.write_bytes(_lines(0, 1000))
    finished = asyncio.Event()

    async def done() -> bool:
        return finished.is_set()

    follower = logs.follow(1, "n", 1, done=done)
    got = [await anext(follower) for _ in range(1000)]
    assert got[-1] == "line 000999"
    cap_log_file(path, LIMIT)  # meanwhile the log went over its limit
    assert await anext(follower) == COMPACTED_NOTE
    with path.open("ab") as f:
        f.write(b"after\n")
    finished.set()
    assert [line async for line in follower] == ["after"]


async def test_the_capper_watches_active_logs(tmp_path: Path) -> None:
    """The hazard: a node wrote 213 MB of log; nothing bounded it and it could fill the disk."""
    log = tmp_path / "1.log"
    active: list[Path] = [log]
    capper = LogCapper(lambda: active, LIMIT, interval=0.01)
    capper.start()
    try:
        with log.open("ab") as f:
            for i in range(50):
                f.write(_lines(i * 100, 100))
                f.flush()
                await asyncio.sleep(0.005)
        deadline = asyncio.get_running_loop().time() + 10
        while log.stat().st_size > LIMIT:
            assert asyncio.get_running_loop().time() < deadline, log.stat().st_size
            await asyncio.sleep(0.01)
    finally:
        await capper.close()
    assert log.read_bytes().endswith(b"line 004999\n")


async def test_the_last_look_caps_only_a_log_over_the_limit(tmp_path: Path) -> None:
    """``LogCapper.cap`` (an attempt's end): a log within the limit is left as it is (looked at with a ``stat``,
    no trip to a thread), one over it is compacted, a missing one is no error."""
    capper = LogCapper(lambda: [], LIMIT)
    within, over = tmp_path / "within.log", tmp_path / "over.log"
    within.write_bytes(b"x" * LIMIT)
    over.write_bytes(_lines(0, 1000))
    await capper.cap(within)
    await capper.cap(over)
    await capper.cap(tmp_path / "missing.log")
    assert within.read_bytes() == b"x" * LIMIT
    assert over.stat().st_size <= LIMIT and b"bytes of this log were dropped" in over.read_bytes()
    assert over.read_bytes().endswith(b"line 000999\n") and not (tmp_path / "missing.log").exists()
