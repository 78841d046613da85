"""The whole runtime on the Kafka bus: the engine is driven by events that come back from a real broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from aihub.bus.base import RunEvent
from aihub.bus.kafka import KafkaBus
from aihub.domain.status import RunStatus
from aihub.runtime import open_runtime
from aihub.services.users import create_user
from aihub.settings import Settings
from tests.engine.support import node_log, start_run, wait_for_run
from tests.kafka.support import OpenBus, collect

pytestmark = pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def test_seed_example_succeeds_over_kafka(
    settings: Settings, tansu: str, prefix: str, host_dir: Path, open_bus: OpenBus
) -> None:
    settings.data_dir = host_dir / "data"  # nodes have a private /tmp
    settings.bus = "kafka"
    settings.kafka_bootstrap = tansu
    settings.kafka_topic_prefix = prefix
    replica = await open_bus()  # another API replica, on the same topic
    watch = replica.subscribe()

    async with open_runtime(settings) as rt:
        assert isinstance(rt.bus, KafkaBus)
        user = await create_user("alice", "alice-password-1")
        run = await start_run(rt, user, (EXAMPLES / "pass-params-demo.yaml").read_text())
        run = await wait_for_run(rt, run.id)
        assert run.status is RunStatus.SUCCEEDED, run.message
        assert (await node_log(rt, run.id, "step2")).splitlines() == [
            "outparam1",
            "/tmp/outparam2.txt",
            "/tmp/outparam3",
            "outparam2",
            "file1",
        ]

    seen: list[RunEvent] = []
    while not seen or seen[-1].node is not None or seen[-1].run_status != RunStatus.SUCCEEDED:
        seen += await collect(watch, 1)
    assert {e.run_id for e in seen} == {run.id}
    assert [e.run_status for e in seen if e.node is None] == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert [(e.node, e.node_status) for e in seen if e.node is not None] == [
        ("step1", "RUNNING"),
        ("step1", "SUCCEEDED"),
        ("step2", "RUNNING"),
        ("step2", "SUCCEEDED"),
    ]
