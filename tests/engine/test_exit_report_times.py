"""An attempt never ends before it started, whatever clock its end was read from.

The local executor reads a node's end from its ``exit`` file's mtime, which is the kernel's coarse clock (a
4 ms tick here), and its start from the precise clock just before the spawn: a node shorter than a tick
seemed to end before it started (``tests/engine/test_local_executor.py::test_exit_codes`` failed so, about
once in twenty runs), and its duration showed negative. Kubernetes gives whole seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aihub.engine.executors.base import ExitReport

START = datetime(2026, 12, 6, 0, 23, 3, 234091, tzinfo=UTC)


def test_an_end_read_before_the_start_is_the_start() -> None:
    report = ExitReport(exit_code=0, started_at=START, finished_at=START - timedelta(microseconds=1646))
    assert report.finished_at == START
    assert ExitReport.from_json(report.to_json()).finished_at == START


def test_an_end_after_the_start_is_kept() -> None:
    end = START + timedelta(milliseconds=3)
    assert ExitReport(exit_code=0, started_at=START, finished_at=end).finished_at == end
    assert ExitReport(exit_code=0, started_at=None, finished_at=end).finished_at == end
    assert ExitReport(exit_code=0, started_at=START, finished_at=None).finished_at is None
