"""Run ownership between engine workers: the consumer group ``<prefix>.engine`` on a real Tansu broker.

Every partition has exactly one owner once the group settles; a worker that leaves, or dies, hands its
partitions to the others; a worker gives partitions up (``on_revoke`` returns) before another gets them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from aihub.bus.kafka import GroupTiming, PartitionHook
from tests.kafka.support import OpenBus

ALL = frozenset(range(6))
FAST = GroupTiming(session_timeout_ms=6_000, heartbeat_interval_ms=500, rebalance_timeout_ms=3_000)
ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import asyncio, json, sys
from aihub.bus.kafka import GroupTiming, KafkaBus

async def main(bootstrap, prefix, timing):
    bus = KafkaBus(bootstrap, prefix)
    await bus.start()
    async def on_assign(parts):
        print("assign", *sorted(parts), flush=True)
    async def on_revoke(parts):
        print("revoke", *sorted(parts), flush=True)
    await bus.join_engine_group(on_assign, on_revoke, timing=GroupTiming(**json.loads(timing)))
    await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
"""


class Members:
    """What the hooks of several members reported, and a way to wait (with a deadline) for a state."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, frozenset[int]]] = []
        self.owned: dict[str, frozenset[int]] = {}
        self._changed = asyncio.Condition()

    def hooks(self, name: str) -> tuple[PartitionHook, PartitionHook]:
        async def on_assign(parts: frozenset[int]) -> None:
            await self.record(name, "assign", parts)

        async def on_revoke(parts: frozenset[int]) -> None:
            await self.record(name, "revoke", parts)

        return on_assign, on_revoke

    async def record(self, name: str, kind: str, parts: frozenset[int]) -> None:
        self.log.append((name, kind, parts))
        held = self.owned.get(name, frozenset())
        self.owned[name] = parts if kind == "assign" else held - parts
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 40) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    def split(self, *names: str) -> bool:
        """Every partition owned by exactly one of ``names``, each owning some."""
        held = [self.owned.get(n, frozenset()) for n in names]
        return all(held) and sum(len(h) for h in held) == len(ALL) and frozenset().union(*held) == ALL


async def test_each_run_has_one_owner_and_a_leaving_worker_hands_over(open_bus: OpenBus) -> None:
    a, b = await open_bus(), await open_bus()
    assert a.owns(12345) and a.owned_partitions is None  # outside the group: a single engine owns all
    members = Members()

    await a.join_engine_group(*members.hooks("a"), timing=FAST)
    await members.wait_for(lambda: members.owned.get("a") == ALL)
    assert a.owned_partitions == ALL

    await b.join_engine_group(*members.hooks("b"), timing=FAST)
    await members.wait_for(lambda: members.split("a", "b"))
    assert (a.owned_partitions, b.owned_partitions) == (members.owned["a"], members.owned["b"])
    for run_id in range(1, 300):
        assert a.owns(run_id) != b.owns(run_id)
        assert a.owns(run_id) == (a.partition_for(run_id) in members.owned["a"])
    # a gave everything up before b got anything (eager rebalance, revoke hooks awaited first)
    assert members.log.index(("a", "revoke", ALL)) < members.log.index(("b", "assign", members.owned["b"]))

    await a.close()
    await members.wait_for(lambda: members.owned.get("b") == ALL)
    assert all(b.owns(run_id) for run_id in range(1, 300))


async def test_a_killed_worker_loses_its_runs_to_the_others(
    open_bus: OpenBus, tansu: str, prefix: str
) -> None:
    """ARCHITECTURE: a worker that dies loses nothing; its runs are picked up after the rebalance."""
    members = Members()
    timing = json.dumps({k: getattr(FAST, k) for k in FAST.__dataclass_fields__})
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER,
        tansu,
        prefix,
        timing,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )

    async def follow_child() -> None:
        assert child.stdout is not None
        async for line in child.stdout:
            kind, *parts = line.decode().split()
            await members.record("child", kind, frozenset(int(p) for p in parts))

    follower = asyncio.create_task(follow_child())
    try:
        await members.wait_for(lambda: members.owned.get("child") == ALL)
        b = await open_bus()
        await b.join_engine_group(*members.hooks("b"), timing=FAST)
        await members.wait_for(lambda: members.split("child", "b"))
        lost = members.owned["child"]

        child.send_signal(signal.SIGKILL)  # no goodbye to the group: noticed by the session timeout
        await child.wait()
        await members.wait_for(lambda: members.owned.get("b") == ALL)
        assert b.owned_partitions == ALL and lost
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        follower.cancel()
        await asyncio.wait([follower])


async def test_a_failing_hook_does_not_cost_the_membership(open_bus: OpenBus) -> None:
    a = await open_bus()
    members = Members()
    on_assign, _ = members.hooks("a")
    calls = 0

    async def failing_revoke(parts: frozenset[int]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("engine bug")

    await a.join_engine_group(on_assign, failing_revoke, timing=FAST)
    await members.wait_for(lambda: members.owned.get("a") == ALL)
    b = await open_bus()
    await b.join_engine_group(*members.hooks("b"), timing=FAST)
    await members.wait_for(lambda: members.split("a", "b"))
    assert calls == 1


async def test_no_assignment_reaches_the_hooks_once_close_began(open_bus: OpenBus) -> None:
    """Hazard: aiokafka lets a join that is under way finish while the member stops; its assignment must not
    reach an engine that is shutting down."""
    a = await open_bus()
    members = Members()
    await a.join_engine_group(*members.hooks("a"), timing=FAST)  # the join is now held by the broker
    await a.close()
    assert members.log == []
    assert a.owned_partitions is None
