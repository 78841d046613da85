"""KafkaBus on a real Tansu broker: fan-out between replicas, order per run, slow subscribers, clean close."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from aihub.bus.base import RunEvent, SubscriberTooSlow
from aihub.bus.kafka import GroupTiming, KafkaBus, KafkaUnavailable, partition_of
from tests.kafka.support import OpenBus, collect, free_port

STEPS = 10


def step_event(run_id: int, step: int) -> RunEvent:
    return RunEvent(run_id, "RUNNING", node="n", node_status="RUNNING", attempt=step, message=f"step {step}")


def steps_by_run(events: list[RunEvent]) -> dict[int, list[int | None]]:
    by_run: dict[int, list[int | None]] = defaultdict(list)
    for event in events:
        by_run[event.run_id].append(event.attempt)
    return dict(by_run)


async def test_events_reach_subscribers_of_every_replica_in_run_order(open_bus: OpenBus) -> None:
    a, b = await open_bus(), await open_bus()
    runs = range(1, 31)
    subs = {
        "a all": a.subscribe(),
        "b all": b.subscribe(),
        "a run 3": a.subscribe(3),
        "b run 4": b.subscribe(4),
    }

    async def publish_steps(bus: KafkaBus, run_ids: list[int]) -> None:
        for step in range(STEPS):  # runs interleaved, steps of one run in order
            for run_id in run_ids:
                await bus.publish(step_event(run_id, step))

    await asyncio.gather(
        publish_steps(a, [r for r in runs if r % 2]), publish_steps(b, [r for r in runs if not r % 2])
    )

    every_run = {run_id: list(range(STEPS)) for run_id in runs}
    assert steps_by_run(await collect(subs["a all"], len(runs) * STEPS)) == every_run
    assert steps_by_run(await collect(subs["b all"], len(runs) * STEPS)) == every_run
    assert steps_by_run(await collect(subs["a run 3"], STEPS)) == {3: list(range(STEPS))}
    assert steps_by_run(await collect(subs["b run 4"], STEPS)) == {4: list(range(STEPS))}


async def test_every_replica_sees_one_runs_events_in_the_brokers_order(open_bus: OpenBus) -> None:
    """Hazard: delivering to local subscribers at publish time. Replica b publishes step 1 right after a's
    step 0 was acknowledged; b's subscribers would see step 1 before step 0 reached b through the broker."""
    a, b = await open_bus(), await open_bus()
    sub_a, sub_b = a.subscribe(), b.subscribe()
    runs = range(1, 21)
    for run_id in runs:
        await a.publish(step_event(run_id, 0))
        await b.publish(step_event(run_id, 1))
        await a.publish(step_event(run_id, 2))
    expected = {run_id: [0, 1, 2] for run_id in runs}
    assert steps_by_run(await collect(sub_a, 3 * len(runs))) == expected
    assert steps_by_run(await collect(sub_b, 3 * len(runs))) == expected


async def test_an_event_keeps_every_field(open_bus: OpenBus) -> None:
    a, b = await open_bus(), await open_bus()
    sub = b.subscribe()
    events = [
        RunEvent(7, "PENDING"),
        RunEvent(
            7, "RUNNING", node="train", node_status="FAILED", retry_count=2, attempt=3, message="ошибка ✗"
        ),
    ]
    for event in events:
        await a.publish(event)
    assert await collect(sub, 2) == events


async def test_a_slow_subscriber_is_dropped_while_others_keep_receiving(open_bus: OpenBus) -> None:
    a, b = await open_bus(), await open_bus()
    slow, fast, elsewhere = a.subscribe(maxsize=5), a.subscribe(), b.subscribe()
    for step in range(20):
        await a.publish(step_event(1, step))
    assert [e.attempt for e in await collect(fast, 20)] == list(range(20))
    assert [e.attempt for e in await collect(elsewhere, 20)] == list(range(20))

    assert [e.attempt for e in await collect(slow, 5)] == list(range(5))
    with pytest.raises(SubscriberTooSlow):
        await anext(slow)
    assert a.subscriber_count == 1  # the slow one is gone

    await a.publish(step_event(1, 20))
    assert [e.attempt for e in await collect(fast, 1)] == [20]


async def test_close_leaves_no_pending_tasks(tansu: str, prefix: str) -> None:
    before = asyncio.all_tasks()
    bus = KafkaBus(tansu, prefix)
    await bus.start()
    await bus.join_engine_group(timing=GroupTiming(6_000, 500, 1_000))  # close waits for a join under way
    sub = bus.subscribe()
    await bus.publish(step_event(1, 0))
    assert await collect(sub, 1) == [step_event(1, 0)]
    started = {t.get_name() for t in asyncio.all_tasks() - before}
    assert f"kafka bus reader {prefix}.run-events" in started
    assert f"kafka engine member {prefix}.engine" in started

    await bus.close()
    assert not {t for t in asyncio.all_tasks() - before if not t.done()}
    await bus.close()  # twice is fine
    with pytest.raises(RuntimeError, match="not started"):
        await bus.publish(step_event(1, 1))


async def test_an_unreachable_broker_names_the_setting(prefix: str) -> None:
    before = asyncio.all_tasks()
    address = f"127.0.0.1:{free_port()}"  # nobody listens there
    bus = KafkaBus(address, prefix)
    with pytest.raises(KafkaUnavailable, match="AIHUB_KAFKA_BOOTSTRAP") as caught:
        await bus.start()
    assert address in str(caught.value)
    assert not {t for t in asyncio.all_tasks() - before if not t.done()}


async def test_start_creates_the_topic_with_six_partitions(
    open_bus: OpenBus, tansu: str, prefix: str
) -> None:
    bus = await open_bus()
    admin = AIOKafkaAdminClient(bootstrap_servers=tansu)
    await admin.start()
    try:
        [described] = await admin.describe_topics([f"{prefix}.run-events"])
    finally:
        await admin.close()
    assert len(described["partitions"]) == 6
    assert {bus.partition_for(run_id) for run_id in range(1, 200)} == set(range(6))


async def test_an_existing_topic_is_used_as_it_is(open_bus: OpenBus, tansu: str, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=tansu)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"{prefix}.run-events", 3, 1)])
    finally:
        await admin.close()
    a, b = await open_bus(), await open_bus()
    assert {a.partition_for(run_id) for run_id in range(1, 200)} == {0, 1, 2}
    sub = b.subscribe()
    await a.publish(step_event(5, 0))
    assert await collect(sub, 1) == [step_event(5, 0)]


def test_runs_are_partitioned_as_any_kafka_client_would() -> None:
    """Hazard: a private partitioning scheme would disagree with other clients producing to the topic."""
    for run_id in range(1, 500):
        assert partition_of(run_id, 6) == DefaultPartitioner()(str(run_id).encode(), list(range(6)), [])
