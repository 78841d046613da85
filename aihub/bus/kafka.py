"""Kafka bus: run events travel through one topic, so every API replica and engine worker sees them.

Events go to ``<prefix>.run-events``, keyed and partitioned by run id, so the events of one run keep their
order. ``publish`` returns once the broker has acknowledged the event; local subscribers get it when it comes
back from the broker, like every other process does, so all processes see one run's events in the same order.

Every process reads every partition from the end (manual assignment, no group): live views only need what
happens from now on and re-read the database for the past.

Run ownership between engine workers (``join_engine_group``): a second consumer joins the shared group
``<prefix>.engine``; the worker assigned a partition drives the runs whose events land there (``owns``), and
Kafka's rebalance moves the partitions of a worker that leaves or dies to the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.partitioner import murmur2
from aiokafka.protocol.group import JoinGroupRequest, LeaveGroupRequest

from aihub.bus.base import BaseBus, RunEvent

log = logging.getLogger("aihub.bus")

PartitionHook = Callable[[frozenset[int]], Awaitable[None]]

DEFAULT_PARTITIONS = 6
_RETRY_SECONDS = 1.0  # back-off after a consumer error, so a broken broker does not spin the loop


class KafkaUnavailable(ConnectionError):
    """The broker could not be reached or refused to set the bus up."""


@dataclass(frozen=True)
class GroupTiming:
    """Consumer-group timing of the engine group: how fast a dead worker's runs move to the others.

    A worker that stops cleanly leaves the group at once; one that dies is noticed after ``session_timeout_ms``.
    A rebalance then takes up to ``rebalance_timeout_ms`` (the time members get to rejoin)."""

    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    rebalance_timeout_ms: int = 10_000


def partition_of(run_id: int, partitions: int) -> int:
    """The partition of a run: Kafka's default (murmur2) partitioning of the key, as any Kafka client does."""
    return (murmur2(run_key(run_id)) & 0x7FFFFFFF) % partitions


def run_key(run_id: int) -> bytes:
    return str(run_id).encode()


class KafkaBus(BaseBus):
    def __init__(
        self,
        bootstrap: str,
        topic_prefix: str,
        *,
        partitions: int = DEFAULT_PARTITIONS,
        replication_factor: int = 1,
    ) -> None:
        super().__init__()
        self.bootstrap = bootstrap
        self.topic = f"{topic_prefix}.run-events"
        self.engine_group = f"{topic_prefix}.engine"
        self._want_partitions = partitions
        self._replication_factor = replication_factor
        self._partitions = 0
        self._stack: AsyncExitStack | None = None
        self._producer: AIOKafkaProducer | None = None
        self._ownership: _Ownership | None = None

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Create the topic if missing, start the producer and the reader of every partition."""
        if self._stack is not None:
            raise RuntimeError("KafkaBus already started")
        stack = AsyncExitStack()
        try:
            try:
                await self._open(stack)
            except (KafkaError, OSError) as exc:
                raise KafkaUnavailable(
                    f"cannot set up the Kafka bus at {self.bootstrap!r} (AIHUB_KAFKA_BOOTSTRAP): {exc}"
                ) from exc
        except BaseException:
            await stack.aclose()
            self._producer = None
            raise
        self._stack = stack

    async def _open(self, stack: AsyncExitStack) -> None:
        await self._ensure_topic()
        # Idempotence (enable_idempotence) is off: Tansu does not implement InitProducerId. Order per
        # partition still holds, as aiokafka keeps one request in flight per broker; a retried duplicate is
        # harmless because every consumer of run events is level-triggered.
        self._producer = await _started(
            stack, AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=0)
        )
        self._partitions = len(await self._producer.partitions_for(self.topic))
        reader = await _started(
            stack, AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False)
        )
        await self._read_from_end(reader)
        _own_task(stack, self._deliver_forever(reader), f"kafka bus reader {self.topic}")

    async def close(self) -> None:
        """Leave the engine group, flush the producer, stop the reader. Safe to call twice."""
        stack, self._stack = self._stack, None
        self._producer = None
        if self._ownership is not None:
            # aiokafka lets a join under way finish while the member stops: keep it from the hooks
            self._ownership.detach()
            self._ownership = None
        if stack is not None:
            await stack.aclose()

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            await admin.start()
            if self.topic in await admin.list_topics():
                return
            topic = NewTopic(self.topic, self._want_partitions, self._replication_factor)
            response = await admin.create_topics([topic])
            for _name, code, *_ in response.topic_errors:
                # another process may have created it in the meantime
                if code and for_code(code) is not TopicAlreadyExistsError:
                    raise for_code(code)(f"creating topic {self.topic!r}")
        finally:
            await admin.close()

    async def _read_from_end(self, reader: AIOKafkaConsumer) -> None:
        """Pin the read position now, so every event published after ``start`` returns is delivered."""
        tps = [TopicPartition(self.topic, p) for p in range(self._partitions)]
        reader.assign(tps)
        for tp, offset in (await reader.end_offsets(tps)).items():
            reader.seek(tp, offset)

    async def _deliver_forever(self, reader: AIOKafkaConsumer) -> None:
        while True:
            try:
                batches = await reader.getmany(timeout_ms=1_000)
            except KafkaError:
                log.exception("reading %s failed; retrying", self.topic)
                await asyncio.sleep(_RETRY_SECONDS)
                continue
            for records in batches.values():
                for record in records:
                    event = _decode(record.value)
                    if isinstance(event, dict):
                        self.deliver_control(event)
                    elif event is not None:
                        if self.metrics is not None and record.timestamp > 0:
                            self.metrics.bus_lag.observe(max(time.time() - record.timestamp / 1000, 0.0))
                        self.deliver(event)

    async def ready(self) -> None:
        """Raise unless a broker answers a metadata request now (``/readyz``)."""
        if self._producer is None:
            raise RuntimeError("KafkaBus is not started")
        metadata = await self._producer.client.fetch_all_metadata()
        if self.topic not in metadata.topics():
            raise RuntimeError(f"topic {self.topic!r} is missing on {self.bootstrap}")

    # ----------------------------------------------------------------- events
    async def publish(self, event: RunEvent) -> None:
        """Send keyed by run id and wait for the broker's acknowledgement (``acks=all``)."""
        if self._producer is None:
            raise RuntimeError("KafkaBus is not started")
        started = time.perf_counter()
        try:
            await self._producer.send_and_wait(
                self.topic,
                json.dumps(event.to_json()).encode(),
                key=run_key(event.run_id),
                partition=self.partition_for(event.run_id),
            )
        except BaseException:
            if self.metrics is not None:
                self.metrics.observe_publish(started, ok=False)
            raise
        if self.metrics is not None:
            self.metrics.observe_publish(started, ok=True)

    async def publish_control(self, message: dict[str, Any]) -> None:
        """Send a control message (``{"control": KIND, ...}``) to every process that reads the topic, this one
        included. Keyed ``control`` on partition 0: every reader reads every partition; the engine group's
        members ignore what they poll."""
        if self._producer is None:
            raise RuntimeError("KafkaBus is not started")
        value = json.dumps(message).encode()
        await self._producer.send_and_wait(self.topic, value, key=b"control", partition=0)

    def partition_for(self, run_id: int) -> int:
        if not self._partitions:
            raise RuntimeError("KafkaBus is not started")
        return partition_of(run_id, self._partitions)

    # ----------------------------------------------------------------- engine ownership
    async def join_engine_group(
        self,
        on_assign: PartitionHook | None = None,
        on_revoke: PartitionHook | None = None,
        *,
        timing: GroupTiming = GroupTiming(),
    ) -> None:
        """Join ``<prefix>.engine``: from now on this worker owns the runs of the partitions Kafka assigns it.

        Kafka's (eager) rebalance is passed through as is: ``on_revoke(partitions)`` is awaited before the
        group moves on, so a worker must stop driving those runs (not kill their nodes) before it returns;
        no other worker is assigned them until then. ``on_assign(partitions)`` follows with the new
        assignment (which may include the same partitions again): activate the active runs whose
        ``partition_for(run_id)`` is in it, spawning the work rather than awaiting it. The first assignment
        arrives the same way, so start-up recovery is just ``on_assign``."""
        if self._stack is None:
            raise RuntimeError("KafkaBus is not started")
        if self._ownership is not None:
            raise RuntimeError("already in the engine group")
        ownership = _Ownership(on_assign, on_revoke)
        member = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.engine_group,
            session_timeout_ms=timing.session_timeout_ms,
            heartbeat_interval_ms=timing.heartbeat_interval_ms,
            rebalance_timeout_ms=timing.rebalance_timeout_ms,
        )
        try:
            member = await _started(self._stack, member)
        except KafkaError as exc:
            raise KafkaUnavailable(
                f"cannot join {self.engine_group!r} at {self.bootstrap!r} (AIHUB_KAFKA_BOOTSTRAP): {exc}"
            ) from exc
        _leave_in_every_generation(member)
        member.subscribe([self.topic], listener=ownership)
        _own_task(self._stack, _stay_in_group(member), f"kafka engine member {self.engine_group}")
        self._ownership = ownership

    def owns(self, run_id: int) -> bool:
        """Whether this worker drives ``run_id``. Outside the engine group (a single engine) every run is
        its own; inside it only the runs of assigned partitions, and none while a rebalance is under way."""
        if self._ownership is None:
            return True
        return self.partition_for(run_id) in self._ownership.owned

    @property
    def owned_partitions(self) -> frozenset[int] | None:
        """Partitions assigned in the engine group; None outside it."""
        return None if self._ownership is None else self._ownership.owned


class _Ownership(ConsumerRebalanceListener):
    """Tracks the engine group's assignment and forwards it to the engine's hooks."""

    def __init__(self, on_assign: PartitionHook | None, on_revoke: PartitionHook | None) -> None:
        self.owned: frozenset[int] = frozenset()
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._detached = False

    def detach(self) -> None:
        """Closing: own nothing and call no hook from now on."""
        self._detached = True
        self.owned = frozenset()

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.owned = frozenset()
        if not self._detached:
            await _call(self._on_revoke, frozenset(tp.partition for tp in revoked), "on_revoke")

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        if self._detached:
            return
        self.owned = frozenset(tp.partition for tp in assigned)
        await _call(self._on_assign, self.owned, "on_assign")


def _leave_in_every_generation(member: AIOKafkaConsumer) -> None:
    """Make the member's stop leave the group even in generation 0.

    aiokafka sends LeaveGroup on stop only when the generation is above 0, as Kafka numbers generations from 1;
    Tansu (the broker of the tests) numbers the first one 0, so a worker stopped cleanly would stay a member
    until its session timed out, and nobody would take its runs over before. The request is the same either
    way (group and member id); aiokafka's own path is kept for every other generation."""
    coordinator = getattr(member, "_coordinator", None)
    own = getattr(coordinator, "_maybe_leave_group", None)
    if coordinator is None or own is None:  # another aiokafka: its own behaviour
        return

    async def leave() -> None:
        if (
            coordinator.generation == 0
            and coordinator.member_id != JoinGroupRequest.UNKNOWN_MEMBER_ID
            and coordinator._group_instance_id is None
        ):
            try:
                await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, coordinator.member_id))
            except KafkaError as exc:
                log.error("LeaveGroup request failed: %s", exc)
            else:
                log.info("LeaveGroup request succeeded")
            coordinator.reset_generation()
            return
        await own()

    coordinator._maybe_leave_group = leave


async def _call(hook: PartitionHook | None, partitions: frozenset[int], name: str) -> None:
    if hook is None or not partitions:
        return
    try:
        await hook(partitions)
    except Exception:  # a failing hook must not break group membership
        log.exception("engine group %s hook failed for partitions %s", name, sorted(partitions))


async def _stay_in_group(member: AIOKafkaConsumer) -> None:
    """Poll so the group keeps this member; the records themselves reach us through the reader."""
    while True:
        try:
            await member.getmany(timeout_ms=1_000)
        except KafkaError:
            log.exception("engine group member failed to poll; retrying")
            await asyncio.sleep(_RETRY_SECONDS)


def _decode(raw: bytes | None) -> RunEvent | dict[str, Any] | None:
    """A run event, a control message (a dict with ``control``), or None for garbage."""
    try:
        value = json.loads(raw or b"")
        if isinstance(value, dict) and "control" in value:
            return value
        return RunEvent.from_json(value)
    except (ValueError, TypeError, AttributeError):
        log.warning("skipping a malformed run event: %r", raw[:200] if raw else raw)
        return None


async def _started(stack: AsyncExitStack, client: Any) -> Any:
    """Start an aiokafka client and register its stop; a failed start still stops it (no leaked tasks)."""
    stack.push_async_callback(client.stop)
    await client.start()
    return client


def _own_task(stack: AsyncExitStack, coro: Any, name: str) -> None:
    """A task owned by the bus: cancelled and awaited on close; a crash is logged, never lost."""
    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(_log_crash)

    async def cancel() -> None:
        task.cancel()
        await asyncio.wait([task])  # unlike `await task`, a cancel of close() itself still propagates

    stack.push_async_callback(cancel)


def _log_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s crashed", task.get_name(), exc_info=task.exception())
