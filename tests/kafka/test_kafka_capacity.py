"""Two engine workers on one Kafka bus and one PostgreSQL database share a virtual cluster's capacity."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from aihub.db.models import Attempt, CapacityClaim, Run, VirtualCluster
from aihub.domain.status import RunStatus
from aihub.engine import dispatch
from aihub.runtime import open_runtime
from aihub.services.runs import create_run
from aihub.services.users import create_user
from aihub.services.workflows import create_workflow
from aihub.settings import Settings
from tests.kafka.test_kafka_engine_workers import worker
from tests.polling import until

pytestmark = pytest.mark.parametrize("db_backend", ["postgres"], indirect=True)


async def test_two_workers_never_overcommit_a_cluster(
    settings: Settings, tansu: str, prefix: str, host_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hazard: each worker counted the cluster in memory only, so two workers ran two nodes at once on a
    cluster of capacity 1."""
    monkeypatch.setattr(dispatch, "SHARED_RETRY_DELAY", 0.2)
    settings.data_dir = host_dir / "data"  # nodes have a private /tmp
    settings.bus = "kafka"  # shared capacity: "auto" turns it on
    settings.kafka_bootstrap = tansu
    settings.kafka_topic_prefix = prefix
    settings.kafka_session_timeout_ms, settings.kafka_heartbeat_interval_ms = 6000, 500
    settings.kafka_rebalance_timeout_ms = 3000
    async with (
        open_runtime(settings, run_engine=False),
        worker(settings) as (bus_a, _),
        worker(settings) as (bus_b, _),
    ):
        await until(
            lambda: (
                bus_a.owned_partitions
                and bus_b.owned_partitions
                and len(bus_a.owned_partitions | bus_b.owned_partitions) == 6
            ),
            "both workers own partitions",
            timeout=60,
        )
        await VirtualCluster.create(name="one", cpu_millis=500, memory_mib=256, capacity=1)
        user = await create_user("alice", "alice-password-1")
        node = {"name": "n", "command": "sleep 0.3", "cluster": "one"}
        version = await create_workflow(user, {"name": "one-at-a-time", "nodes": [node]})
        runs: list[Run] = []
        while len(runs) < 30 and not (
            sum(bus_a.owns(r.id) for r in runs) >= 2 and sum(bus_b.owns(r.id) for r in runs) >= 2
        ):
            runs.append(await create_run(bus_a, user, version.id))
        assert any(bus_a.owns(r.id) for r in runs) and any(bus_b.owns(r.id) for r in runs)

        async def all_done() -> bool:
            return await Run.filter(status=RunStatus.SUCCEEDED).count() == len(runs)

        await until(all_done, "every run succeeded", timeout=120)

        async def no_claims() -> bool:
            return await CapacityClaim.all().count() == 0

        await until(no_claims, "every claim released", timeout=60)
        attempts = sorted(await Attempt.all(), key=lambda a: a.started_at)
    assert len(attempts) == len(runs)
    for before, after in itertools.pairwise(attempts):
        assert after.started_at >= before.finished_at, "two nodes of a one-SKU cluster overlapped"
