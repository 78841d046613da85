"""A bus subscription of run-level events only (``runs_only``, the engine's listener): it gets every run's
run-level events in order, never a node event, and holds its bounded buffer like any subscription."""

from __future__ import annotations

import pytest

from aihub.bus.base import RunEvent, SubscriberTooSlow
from aihub.bus.memory import MemoryBus


def _events() -> list[RunEvent]:
    return [
        RunEvent(run_id=1, run_status="PENDING"),
        RunEvent(run_id=1, run_status="RUNNING", node="a", node_status="RUNNING"),
        RunEvent(run_id=2, run_status="RUNNING"),
        RunEvent(run_id=1, run_status="RUNNING", node="a", node_status="SUCCEEDED"),
        RunEvent(run_id=1, run_status="SUCCEEDED"),
    ]


async def test_run_level_only_subscribers_get_no_node_events() -> None:
    bus = MemoryBus()
    runs_only, everything, one_run = bus.subscribe(runs_only=True), bus.subscribe(), bus.subscribe(1)
    assert bus.subscriber_count == 3
    for event in _events():
        await bus.publish(event)
    got = [await anext(runs_only) for _ in range(3)]
    assert [(e.run_id, e.run_status, e.node) for e in got] == [
        (1, "PENDING", None),
        (2, "RUNNING", None),
        (1, "SUCCEEDED", None),
    ]
    assert runs_only._queue.empty()  # no node event is waiting behind them
    assert [await anext(everything) for _ in range(5)] == _events()
    assert [await anext(one_run) for _ in range(4)] == [e for e in _events() if e.run_id == 1]
    runs_only.close()
    assert bus.subscriber_count == 2
    await bus.publish(RunEvent(run_id=3, run_status="PENDING"))
    assert runs_only._queue.empty()


async def test_a_run_level_subscriber_that_falls_behind_is_dropped() -> None:
    bus = MemoryBus()
    sub = bus.subscribe(runs_only=True, maxsize=2)
    for run_id in range(3):
        await bus.publish(RunEvent(run_id=run_id, run_status="PENDING"))
    assert [(await anext(sub)).run_id for _ in range(2)] == [0, 1]
    with pytest.raises(SubscriberTooSlow):
        await anext(sub)
    assert bus.subscriber_count == 0


def test_run_level_only_is_for_every_run() -> None:
    with pytest.raises(ValueError, match="for every run"):
        MemoryBus().subscribe(5, runs_only=True)
