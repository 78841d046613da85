"""Append-only attempt logs on local disk (aihub.storage.local.LocalLogStore)."""

from __future__ import annotations

import asyncio
import os
import tracemalloc
from pathlib import Path

import pytest

from aihub.storage.local import MAX_LINE_BYTES, TAIL_LINE_CHARS, LocalLogStore


@pytest.fixture
def logs(tmp_path: Path) -> LocalLogStore:
    return LocalLogStore(tmp_path / "logs", poll_interval=0.01)


async def _always_done() -> bool:
    return True


def test_path_layout_creates_parent(logs: LocalLogStore) -> None:
    path = logs.path(7, "train_model", 2)
    assert path == logs.root / "7" / "train_model" / "2.log"
    assert path.parent.is_dir()


@pytest.mark.parametrize("node", ["../etc", "a/b", "1abc", "", "a-b", "a.b", "..", "a\nb", "é"])
def test_path_refuses_bad_node_names(logs: LocalLogStore, node: str) -> None:
    with pytest.raises(ValueError, match="invalid node name"):
        logs.path(1, node, 1)
    assert not logs.root.exists()


@pytest.mark.parametrize(("run_id", "attempt"), [(-1, 1), (1, -1), (True, 1), ("1", 1), (1, 1.0)])
def test_path_refuses_bad_ids(logs: LocalLogStore, run_id: object, attempt: object) -> None:
    with pytest.raises(ValueError, match="non-negative integers"):
        logs.path(run_id, "node", attempt)  # type: ignore[arg-type]


async def test_read_by_offsets(logs: LocalLogStore) -> None:
    logs.path(1, "n", 1).write_bytes(b"0123456789")
    assert await logs.read(1, "n", 1, 0, 4) == (b"0123", 4)
    assert await logs.read(1, "n", 1, 4, 100) == (b"456789", 10)
    assert await logs.read(1, "n", 1, 10) == (b"", 10)
    assert await logs.read(1, "n", 1, 3, 2) == (b"34", 5)
    assert await logs.size(1, "n", 1) == 10


async def test_read_missing_log(logs: LocalLogStore) -> None:
    assert await logs.read(1, "n", 1) == (b"", 0)
    assert await logs.size(1, "n", 1) == 0
    assert await logs.tail_lines(1, "n", 1, 5) == []


async def test_read_rejects_negative_offset(logs: LocalLogStore) -> None:
    with pytest.raises(ValueError):
        await logs.read(1, "n", 1, -1)


async def test_tail_lines_of_file_bigger_than_block(logs: LocalLogStore) -> None:
    lines = [f"line {i} " + "x" * (i % 50) for i in range(20_000)]  # ~0.7 MB, many 64 KiB blocks
    logs.path(1, "n", 1).write_text("\n".join(lines) + "\n")
    assert await logs.tail_lines(1, "n", 1, 5) == lines[-5:]
    assert await logs.tail_lines(1, "n", 1, 1) == lines[-1:]
    assert await logs.tail_lines(1, "n", 1, 3000) == lines[-3000:]


async def test_tail_lines_without_trailing_newline_and_short_file(logs: LocalLogStore) -> None:
    logs.path(1, "n", 1).write_text("a\r\nb\nc")
    assert await logs.tail_lines(1, "n", 1, 2) == ["b", "c"]
    assert await logs.tail_lines(1, "n", 1, 10) == ["a", "b", "c"]


async def test_tail_lines_cuts_long_lines(logs: LocalLogStore) -> None:
    long = "y" * (TAIL_LINE_CHARS * 3) + "END"
    logs.path(1, "n", 1).write_text(f"first\n{long}\nlast\n")
    first, cut, last = await logs.tail_lines(1, "n", 1, 3)
    assert (first, last) == ("first", "last")
    assert cut.startswith("…") and cut.endswith("END")
    assert len(cut) == TAIL_LINE_CHARS + 1


async def test_tail_lines_reads_only_the_end(logs: LocalLogStore) -> None:
    """Hazard: reading a 1 GiB log (here a sparse file) to show its last lines."""
    path = logs.path(1, "n", 1)
    with open(path, "wb") as f:
        f.truncate(1024**3)
        f.seek(0, os.SEEK_END)
        f.write(b"\nalpha\nbeta\ngamma\n")
    tracemalloc.start()
    try:
        result = await logs.tail_lines(1, "n", 1, 3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result == ["alpha", "beta", "gamma"]
    assert peak < 1024 * 1024


async def test_follow_while_writer_appends(logs: LocalLogStore) -> None:
    path = logs.path(3, "step", 1)
    expected = [f"line {i:04d} " + "z" * (i % 97) for i in range(2000)]
    finished = asyncio.Event()
    polls = 0
    polled = asyncio.Condition()
    got: list[str] = []
    received = asyncio.Condition()

    async def done() -> bool:
        nonlocal polls
        async with polled:
            polls += 1
            polled.notify_all()
        return finished.is_set()

    async def two_more_polls() -> None:
        # done() runs before each drain: after two more calls, one whole drain started after our write
        async with polled:
            target = polls + 2
            await polled.wait_for(lambda: polls >= target)

    async def writer() -> None:
        with open(path, "ab", buffering=0) as f:
            for batch in range(0, len(expected), 100):
                lines = expected[batch : batch + 100]
                f.write("".join(line + "\n" for line in lines[:-1]).encode())
                last = (lines[-1] + "\n").encode()
                f.write(last[:5])  # a partial line is visible to the follower ...
                await two_more_polls()
                f.write(last[5:])  # ... and must still arrive whole
                want = batch + len(lines)
                async with received:
                    await received.wait_for(lambda n=want: len(got) >= n)
        finished.set()

    async def reader() -> None:
        async for line in logs.follow(3, "step", 1, done=done):
            async with received:
                got.append(line)
                received.notify_all()

    await asyncio.gather(reader(), writer())
    assert got == expected
    assert polls > 40  # the follower really interleaved with the writer


async def test_follow_waits_for_log_to_appear(logs: LocalLogStore) -> None:
    finished = asyncio.Event()
    first_poll = asyncio.Event()

    async def done() -> bool:
        first_poll.set()
        return finished.is_set()

    async def writer() -> None:
        await first_poll.wait()  # the follower has looked and found no file
        logs.path(4, "late", 1).write_text("hello\nunterminated")
        finished.set()

    got, _ = await asyncio.gather(_collect(logs.follow(4, "late", 1, done=done)), writer())
    assert got == ["hello", "unterminated"]


async def test_follow_from_offset(logs: LocalLogStore) -> None:
    logs.path(1, "n", 1).write_bytes(b"skip me\nkeep\nthis\n")
    got = await _collect(logs.follow(1, "n", 1, done=_always_done, offset=len(b"skip me\n")))
    assert got == ["keep", "this"]


async def test_follow_drains_after_done_turns_true(logs: LocalLogStore) -> None:
    """Hazard: checking done() *after* draining loses what was written just before it turned true."""
    path = logs.path(1, "n", 1)
    path.write_text("early\n")
    calls = 0

    async def done() -> bool:
        nonlocal calls
        calls += 1
        if calls == 2:  # the process writes its last line, then is reported finished
            with open(path, "a") as f:
                f.write("last words\n")
            return True
        return False

    assert await _collect(logs.follow(1, "n", 1, done=done)) == ["early", "last words"]


async def test_follow_missing_log_when_done(logs: LocalLogStore) -> None:
    assert await _collect(logs.follow(1, "n", 1, done=_always_done)) == []


async def test_follow_huge_line_in_bounded_chunks(logs: LocalLogStore) -> None:
    """Hazard: a 20 MB line (e.g. a progress bar without newlines) held whole in memory."""
    size = 20 * 1024 * 1024
    with open(logs.path(1, "n", 1), "wb") as f:
        piece = b"x" * (1024 * 1024)
        for _ in range(size // len(piece)):
            f.write(piece)
        f.write(b"\nend\n")

    lengths: list[int] = []
    tail: list[str] = []
    tracemalloc.start()
    try:
        async for chunk in logs.follow(1, "n", 1, done=_always_done):
            lengths.append(len(chunk))
            if not chunk.startswith("x"):
                tail.append(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tail == ["end"]
    assert max(lengths) <= MAX_LINE_BYTES
    assert sum(lengths[:-1]) == size
    assert peak < 2 * 1024 * 1024


async def test_follow_chunks_never_split_a_character(logs: LocalLogStore) -> None:
    line = "a" + "é" * MAX_LINE_BYTES + "ü"  # after one ASCII byte, chunk limits fall mid-character
    logs.path(1, "n", 1).write_text(line + "\n")
    chunks = await _collect(logs.follow(1, "n", 1, done=_always_done))
    assert all(len(c.encode()) <= MAX_LINE_BYTES for c in chunks)
    assert "".join(chunks) == line


async def test_follow_replaces_invalid_utf8(logs: LocalLogStore) -> None:
    logs.path(1, "n", 1).write_bytes(b"ok\n\xff\xfebad\n")
    assert await _collect(logs.follow(1, "n", 1, done=_always_done)) == ["ok", "\ufffd\ufffdbad"]


async def _collect(lines: object) -> list[str]:
    return [line async for line in lines]  # type: ignore[attr-defined]
