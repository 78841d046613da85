"""Several engine workers on one Kafka bus: each run is driven by exactly one of them, and when a worker
leaves, its runs are taken over (running nodes re-attached, nothing run twice)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from aihub.bus.kafka import KafkaBus
from aihub.db.models import NodeRun, Run
from aihub.domain.status import NodeStatus, RunStatus
from aihub.engine.scheduler import Engine
from aihub.runtime import build_executor, open_runtime
from aihub.services.runs import create_run
from aihub.services.users import create_user
from aihub.services.workflows import create_workflow
from aihub.settings import Settings
from aihub.storage.local import build_storage
from tests.polling import gate_wait, until

pytestmark = pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)


@asynccontextmanager
async def worker(settings: Settings) -> AsyncIterator[tuple[KafkaBus, Engine]]:
    bus = KafkaBus(settings.kafka_bootstrap, settings.kafka_topic_prefix)
    await bus.start()
    artifacts, logs = build_storage(settings)
    engine = Engine(settings, bus, build_executor(settings, artifacts, logs))
    try:
        await engine.start()
        yield bus, engine
    finally:
        await engine.close()
        await bus.close()


def _spec(host_dir: Path) -> dict:
    env = {"COUNT": str(host_dir / "count"), "GATE": str(host_dir / "gate")}
    return {
        "name": "gated",
        "nodes": [
            {"name": "a", "command": 'echo "a$AI_HUB_WORKFLOW_RUN_ID" >> "$COUNT"', "env": env},
            {
                "name": "g",
                "command": 'echo "g$AI_HUB_WORKFLOW_RUN_ID" >> "$COUNT"; ' + gate_wait("$GATE"),
                "env": env,
                "depends_on": ["a"],
            },
        ],
    }


async def test_a_leaving_worker_hands_its_runs_over(
    settings: Settings, tansu: str, prefix: str, host_dir: Path
) -> None:
    settings.data_dir = host_dir / "data"  # nodes have a private /tmp
    settings.bus = "kafka"
    settings.kafka_bootstrap = tansu
    settings.kafka_topic_prefix = prefix
    settings.kafka_session_timeout_ms, settings.kafka_heartbeat_interval_ms = 6000, 500
    settings.kafka_rebalance_timeout_ms = 3000
    async with open_runtime(settings, run_engine=False), worker(settings) as (bus_b, _):
        async with worker(settings) as (bus_a, engine_a):
            await until(
                lambda: (
                    bus_a.owned_partitions
                    and bus_b.owned_partitions
                    and len(bus_a.owned_partitions | bus_b.owned_partitions) == 6
                ),
                "both workers own partitions",
                timeout=60,
            )
            user = await create_user("alice", "alice-password-1")
            version = await create_workflow(user, _spec(host_dir))
            runs: list[Run] = []
            while len(runs) < 30 and not (
                any(bus_a.owns(r.id) for r in runs) and any(bus_b.owns(r.id) for r in runs)
            ):
                runs.append(await create_run(bus_a, user, version.id))
            on_a = [r.id for r in runs if bus_a.owns(r.id)]
            assert on_a and len(on_a) < len(runs)

            async def all_gated() -> bool:
                return await NodeRun.filter(name="g", status=NodeStatus.RUNNING).count() == len(runs)

            await until(all_gated, "every run reached its gated node", timeout=60)
            assert set(engine_a.runs) == set(on_a)  # A drives exactly the runs of its partitions
        # A has left the group: B takes A's partitions, re-attaches to A's running nodes
        await until(
            lambda: bus_b.owned_partitions and len(bus_b.owned_partitions) == 6, "B owns all", timeout=60
        )
        (host_dir / "gate").touch()

        async def all_done() -> bool:
            return await Run.filter(status=RunStatus.SUCCEEDED).count() == len(runs)

        await until(all_done, "every run succeeded", timeout=60)
    lines = (host_dir / "count").read_text().split()
    assert sorted(lines) == sorted([f"a{r.id}" for r in runs] + [f"g{r.id}" for r in runs])  # none twice
