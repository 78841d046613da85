"""``aihub run``'s following of a run (``aihub.cli.runner.follow_run``): each attempt's log lines come before
the line saying how that attempt ended, and the end of an attempt is known from the run's own events — no
database query per look at a log, which made following a run of short nodes cost as much as running it."""

from __future__ import annotations

import argparse
import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from aihub.cli import runner
from aihub.services import files, queries
from aihub.settings import Settings
from aihub.storage import local as local_module
from aihub.storage.local import LocalLogStore


async def test_logs_come_before_each_attempt_s_end_without_a_query_per_look(
    tmp_path: Path, host_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_query(*args: object) -> None:
        raise AssertionError("the database was asked whether an attempt is over")

    monkeypatch.setattr(files, "attempt_log_finished", no_query)
    monkeypatch.setattr(queries, "attempt_log_finished", no_query)
    marker = host_dir / "tried"
    nodes = [{"name": "root", "command": "echo 'root says 1'; echo 'root says 2'"}]
    nodes += [
        {"name": f"leaf{i}", "command": f"echo 'leaf{i} says'", "depends_on": ["root"]} for i in range(6)
    ]
    nodes.append(
        {
            "name": "flaky",
            "command": f"if [ -e {marker} ]; then echo second-try; else touch {marker}; echo first-try; exit 1; fi",
            "retries": 1,
            "depends_on": ["leaf0"],
        }
    )
    spec = tmp_path / "wf.yaml"
    spec.write_text(yaml.safe_dump({"name": "follow", "nodes": nodes}))
    out = io.StringIO()
    settings = Settings(data_dir=tmp_path / "data")
    args = argparse.Namespace(file=str(spec), param=[], name=None)
    async with asyncio.timeout(120):
        assert await runner.run_file(settings, args, out) == 0, out.getvalue()
    lines = out.getvalue().splitlines()

    def at(text: str) -> int:
        return lines.index(text)

    assert at("root | root says 1") < at("root | root says 2") < at("root: SUCCEEDED — exited with code 0")
    for i in range(6):
        assert at(f"leaf{i} | leaf{i} says") < at(f"leaf{i}: SUCCEEDED — exited with code 0")
    retried = next(i for i, line in enumerate(lines) if line.startswith("flaky: WAITING"))
    assert at("flaky | first-try") < retried < at("flaky | second-try")
    assert at("flaky | second-try") < next(
        i for i, line in enumerate(lines) if line.startswith("flaky (1): SUCCEEDED")
    )


async def test_a_wake_ends_the_wait_between_two_looks_at_a_log(tmp_path: Path) -> None:
    """A follower told to look again (``wake``) does not sleep out its poll interval first."""
    logs = LocalLogStore(tmp_path / "logs", poll_interval=60)
    logs.path(1, "a", 1).write_text("one\n")
    wake = asyncio.Event()

    async def done() -> bool:
        return wake.is_set()

    seen: list[str] = []

    async def follow() -> None:
        async for line in logs.follow(1, "a", 1, done=done, wake=wake):
            seen.append(line)
            if line == "one":  # written after the first look, before the end
                with logs.location(1, "a", 1).open("a") as f:
                    f.write("two\n")
                wake.set()

    async with asyncio.timeout(10):  # far below the poll interval
        await follow()
    assert seen == ["one", "two"]


async def test_a_log_with_nothing_new_costs_no_trip_to_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower looks at the file's size first (one ``stat`` on the loop) and reads in a worker thread only
    when something was appended: a quiet node's log is not read at each poll, and the log of a node that
    printed nothing (or has no log yet) not at all."""
    looks: list[object] = []
    look = local_module._look

    def counted(*args: Any) -> Any:
        looks.append(args[1])
        return look(*args)

    monkeypatch.setattr(local_module, "_look", counted)
    logs = LocalLogStore(tmp_path / "logs", poll_interval=0.001)
    logs.path(1, "quiet", 1).write_text("one\n")
    logs.path(1, "silent", 1).write_text("")
    polls = 0

    async def done() -> bool:
        nonlocal polls
        polls += 1
        if polls == 10:
            assert looks == [logs.location(1, "quiet", 1)], "read once, then only its size asked"
            with logs.location(1, "quiet", 1).open("a") as f:
                f.write("two\n")
        return polls == 20

    async def at_once() -> bool:
        return True

    async with asyncio.timeout(10):
        assert [line async for line in logs.follow(1, "quiet", 1, done=done)] == ["one", "two"]
        assert len(looks) == 2
        assert [line async for line in logs.follow(1, "silent", 1, done=at_once)] == []
        assert [line async for line in logs.follow(1, "missing", 1, done=at_once)] == []
    assert len(looks) == 2, "neither the empty log nor the missing one was read"
