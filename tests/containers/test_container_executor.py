"""The container executor on a real engine (podman here): the seed's contract in busybox containers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aihub.db.models import Attempt, DataStorage, NodeRun, User, VirtualCluster
from aihub.domain.status import NodeStatus, RunStatus
from aihub.engine.executors.base import Handle
from aihub.runtime import Runtime, open_runtime
from aihub.services.runs import retry_run, stop_run
from aihub.services.users import create_user
from aihub.settings import Settings
from aihub.web.i18n import CONTAINER_FACTS
from tests.containers.support import IMAGE_ONLY_FILE, Engine
from tests.engine.support import node_log, start_run, wait_for_node, wait_for_run

pytestmark = pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def container_settings(settings: Settings, engine: Engine, image: str) -> Settings:
    settings.executor = "container"
    settings.container_engine = engine.name  # type: ignore[assignment]
    settings.container_default_image = image
    settings.stop_grace_seconds = 2.0
    return settings


@pytest.fixture
async def crt(settings: Settings, container_engine: Engine, busybox_image: str) -> AsyncIterator[Runtime]:
    async with open_runtime(container_settings(settings, container_engine, busybox_image)) as runtime:
        yield runtime
        await runtime.executor.settle()  # type: ignore[attr-defined]


@pytest.fixture
async def user(crt: Runtime) -> User:
    return await create_user("alice", "alice-password-1")


def spec(*nodes: dict, name: str = "wf") -> dict:
    return {"name": name, "params": [], "nodes": list(nodes)}


async def handle_of(run_id: int, node: str, attempt: int = 1) -> Handle:
    row = await Attempt.get(node_run__run_id=run_id, node_run__name=node, number=attempt)
    return Handle.from_json(row.handle)


async def until(predicate, what: str, within: float = 60) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(within):
        delay = 0.02
        while not await predicate():
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)


async def test_the_seed_example_runs_in_busybox_containers(
    crt: Runtime, user: User, busybox_image: str
) -> None:
    text = (EXAMPLES / "pass-params-demo.yaml").read_text().replace("python:3.11-slim", busybox_image)
    run = await wait_for_run(crt, (await start_run(crt, user, text)).id)
    assert run.status is RunStatus.SUCCEEDED, run.message
    assert (await node_log(crt, run.id, "step2")).splitlines() == [
        "outparam1",
        "/tmp/outparam2.txt",
        "/tmp/outparam3",
        "outparam2",
        "file1",
    ]
    step1 = await NodeRun.get(run_id=run.id, name="step1")
    assert step1.outputs["output_param1"]["value"] == "outparam1"
    assert await crt.artifacts.exists(step1.outputs["output_param3"]["digest"])
    described = await crt.executor.describe(await handle_of(run.id, "step1"))
    assert described["image"] == busybox_image
    assert described["state"] == "exited with code 0"


async def test_the_node_sees_the_image_not_the_host(crt: Runtime, user: User, tmp_path: Path) -> None:
    host_file = Path("/var/tmp") / f"aihub-host-only-{os.getpid()}"
    host_file.write_text("host\n")
    try:
        command = (
            f"cat {IMAGE_ONLY_FILE[0]}; [ -e {host_file} ] && echo host-visible || echo host-hidden; "
            'echo "$AI_HUB_WORKFLOW_RUN_ID $AI_HUB_USER_ID ${AI_HUB_TOKEN:+token}"; ls -A /tmp/workflow_space | wc -l; '
            'echo "$1" "$GREETING"'
        )
        run = await start_run(
            crt, user, spec({"name": "a", "command": command, "env": {"GREETING": "hello $(not run)"}})
        )
        run = await wait_for_run(crt, run.id)
    finally:
        host_file.unlink()
    assert run.status is RunStatus.SUCCEEDED, run.message
    lines = (await node_log(crt, run.id, "a")).splitlines()
    assert lines == [
        IMAGE_ONLY_FILE[1].strip(),
        "host-hidden",
        f"{run.id} {user.id} token",
        "0",
        " hello $(not run)",
    ]


async def test_labels_live_log_container_tab_events_and_stop_then_kill(
    crt: Runtime, user: User, container_engine: Engine
) -> None:
    # sh is PID 1 in the container: it ignores SIGTERM, so the stop ends with a SIGKILL after the grace period
    run = await start_run(
        crt, user, spec({"name": "slow", "command": "echo started; sleep 1000", "retries": 2})
    )
    await wait_for_node(crt, run.id, "slow", NodeStatus.RUNNING)

    async def logged() -> bool:
        return "started" in await node_log(crt, run.id, "slow")

    await until(logged, "the first line, while the node runs")
    handle = await handle_of(run.id, "slow")
    listed = container_engine.run(
        "ps", "--filter", f"label=aihub/run={run.id}", "--filter", "label=aihub/node=slow",
        "--filter", "label=aihub/attempt=1", "--format", "{{.Names}}",
    )  # fmt: skip
    assert listed.stdout.split() == [handle.data["container"]]
    tab = await crt.executor.describe(handle)
    assert (
        tab["state"] == "running"
        and tab["limits"]["memory"] == f"{handle.data['memory_mib']} MiB"
        and tab["image_id"]
    )
    assert set(tab) <= set(CONTAINER_FACTS), set(tab) - set(CONTAINER_FACTS)  # every fact has its translation
    await stop_run(crt.bus, user, run.id)
    run = await wait_for_run(crt, run.id)
    assert run.status is RunStatus.STOPPED
    node = await NodeRun.get(run_id=run.id, name="slow")
    assert node.attempt == 1  # a stop is never retried
    await crt.executor.settle()  # type: ignore[attr-defined]
    tab = await crt.executor.describe(handle)
    assert tab["exit_code"] == 137  # killed after the grace period
    reasons = [e["reason"] for e in await crt.executor.events(handle)]
    assert {"create", "start", "died"} <= set(reasons), reasons
    assert container_engine.run("container", "exists", handle.data["container"], check=False).returncode != 0


async def test_retries_and_retry_from_failure(crt: Runtime, user: User, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    await DataStorage.create(name="shared", path="/data/shared", host_path=str(shared))
    flaky = {
        "name": "flaky",
        "command": 'echo x >> /data/shared/tries; [ "$(wc -l < /data/shared/tries)" -ge 2 ] && echo ok > /tmp/o',
        "retries": 2,
        "storages": ["shared"],
        "outputs": [{"name": "o", "path": "/tmp/o", "type": "text"}],
    }
    gated = {
        "name": "gated",
        "command": '[ -e /data/shared/gate ] && echo "$v"',
        "storages": ["shared"],
        "inputs": [{"name": "v", "from": "flaky.o"}],
    }
    run = await wait_for_run(crt, (await start_run(crt, user, spec(flaky, gated))).id)
    assert run.status is RunStatus.FAILED
    node = await NodeRun.get(run_id=run.id, name="flaky")
    assert (node.status, node.attempt, node.outputs["o"]["value"]) == (NodeStatus.SUCCEEDED, 2, "ok")
    (shared / "gate").touch()
    await retry_run(crt.bus, user, run.id)
    run = await wait_for_run(crt, run.id)
    assert run.status is RunStatus.SUCCEEDED, run.message
    assert (shared / "tries").read_text().split() == ["x", "x"]  # flaky kept its outputs, not re-run
    assert (await node_log(crt, run.id, "gated", 2)).splitlines() == ["ok"]


async def test_memory_past_the_sku_is_an_out_of_memory_failure(crt: Runtime, user: User) -> None:
    await VirtualCluster.create(name="small", cpu_millis=500, memory_mib=32, capacity=1)
    await crt.engine.load_pools()
    hog = {
        "name": "hog",
        "cluster": "small",
        "command": 'a=$(head -c 100000000 /dev/zero | tr "\\0" x); echo no',
    }
    run = await wait_for_run(crt, (await start_run(crt, user, spec(hog))).id)
    assert run.status is RunStatus.FAILED
    node = await NodeRun.get(run_id=run.id, name="hog")
    assert "out of memory" in node.message and "32 MiB" in node.message, node.message
    assert "out of memory" in await node_log(crt, run.id, "hog")


async def test_a_gpu_asked_for_on_a_host_without_one_fails_clearly(crt: Runtime, user: User) -> None:
    await VirtualCluster.create(name="gpus", cpu_millis=1000, memory_mib=512, gpu=1, capacity=1)
    await crt.engine.load_pools()
    run = await wait_for_run(
        crt, (await start_run(crt, user, spec({"name": "g", "cluster": "gpus", "command": "true"}))).id
    )
    node = await NodeRun.get(run_id=run.id, name="g")
    assert node.status is NodeStatus.FAILED
    assert "GPU" in node.message and "this host has none" in node.message, node.message


async def test_an_image_that_cannot_be_found_fails_clearly(crt: Runtime, user: User) -> None:
    node = {"name": "n", "image": "localhost/aihub-no-such-image:0", "command": "true"}
    run = await wait_for_run(crt, (await start_run(crt, user, spec(node))).id)
    row = await NodeRun.get(run_id=run.id, name="n")
    assert row.status is NodeStatus.FAILED
    assert "could not create the container" in row.message and "aihub-no-such-image" in row.message


CHILD = r"""
import asyncio, json, sys
from aihub.runtime import open_runtime
from aihub.services.runs import create_run
from aihub.services.users import create_user
from aihub.services.workflows import create_workflow
from aihub.settings import Settings

async def main():
    async with open_runtime(Settings()) as rt:
        user = await create_user("bob", "bob-password-1")
        version = await create_workflow(user, json.loads(sys.argv[1]))
        run = await create_run(rt.bus, user, version.id)
        print("RUN", run.id, flush=True)
        async for event in rt.bus.subscribe(run.id):
            print("EVENT", event.node, event.node_status, flush=True)

asyncio.run(main())
"""


@pytest.mark.parametrize(
    "writer", ["kept", "killed"], ids=["log-writer-survives", "exits-before-its-log-is-read"]
)
async def test_kill_9_of_the_server_reattaches_to_running_containers(
    settings: Settings, container_engine: Engine, busybox_image: str, tmp_path: Path, writer: str
) -> None:
    container_settings(settings, container_engine, busybox_image)
    shared = tmp_path / "shared"
    shared.mkdir()
    body = (
        'echo "$N" >> /data/shared/count; echo "$N: before"; '
        'while [ ! -e /data/shared/gate ]; do sleep 0.05; done; echo "$N: after"; echo "$N-out" > /tmp/o'
    )
    nodes = [
        {
            "name": n,
            "command": body,
            "env": {"N": n},
            "storages": ["shared"],
            "outputs": [{"name": "o", "path": "/tmp/o", "type": "text"}],
        }
        for n in ("a", "b")
    ]
    nodes.append(
        {
            "name": "c",
            "command": 'echo "$x $y"',
            "inputs": [{"name": "x", "from": "a.o"}, {"name": "y", "from": "b.o"}],
        }
    )
    env = {
        **os.environ,
        "AIHUB_DATA_DIR": str(settings.data_dir),
        "AIHUB_DATABASE_URL": settings.resolved_database_url,
        "AIHUB_EXECUTOR": "container",
        "AIHUB_CONTAINER_ENGINE": container_engine.name,
        "AIHUB_CONTAINER_DEFAULT_IMAGE": busybox_image,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    async with open_runtime(settings, run_engine=False):
        await DataStorage.create(name="shared", path="/data/shared", host_path=str(shared))
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, json.dumps(spec(*nodes)), env=env, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    run_id, running = None, set()
    try:
        async with asyncio.timeout(90):
            while running != {"a", "b"}:
                line = (await child.stdout.readline()).decode().split()
                assert line, "the server exited early"
                if line[0] == "RUN":
                    run_id = int(line[1])
                elif line[2:] == ["RUNNING"]:
                    running.add(line[1])
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert run_id is not None
    logs = settings.data_dir / "logs"

    def log_text(node: str) -> str:
        path = logs / str(run_id) / node / "1.log"
        return path.read_text() if path.exists() else ""

    async def both_logged() -> bool:
        return all("before" in log_text(n) for n in ("a", "b"))

    await until(both_logged, "both nodes' first lines")
    if writer == "killed":  # the attached clients die too: the containers end with nobody reading their logs
        for pid in _attach_clients(run_id):
            os.kill(pid, signal.SIGKILL)
    (shared / "gate").touch()
    if writer == "killed":
        for node in ("a", "b"):
            container_engine.run("wait", *_containers(container_engine, run_id, node), timeout=60)
    async with open_runtime(settings) as rt:
        run = await wait_for_run(rt, run_id)
        assert run.status is RunStatus.SUCCEEDED, run.message
        assert (await node_log(rt, run_id, "c")).splitlines() == ["a-out b-out"]
        for node in ("a", "b"):
            assert (await node_log(rt, run_id, node)).splitlines() == [f"{node}: before", f"{node}: after"]
            assert (await NodeRun.get(run_id=run_id, name=node)).attempt == 1
        await rt.executor.settle()  # type: ignore[attr-defined]
    assert sorted((shared / "count").read_text().split()) == ["a", "b"]  # nothing ran twice


def _containers(engine: Engine, run_id: int, node: str) -> list[str]:
    listed = engine.run(
        "ps", "-a", "--filter", f"label=aihub/run={run_id}", "--filter", f"label=aihub/node={node}",
        "--format", "{{.Names}}",
    )  # fmt: skip
    return listed.stdout.split()


def _attach_clients(run_id: int) -> list[int]:
    """The ``start --attach`` processes of the run's containers (they outlive the server: own session)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--attach" in cmdline and any(
            re.fullmatch(rb"aihub-r%d-[ab]-a1-[0-9a-f]{8}" % run_id, p) for p in cmdline
        ):
            found.append(int(entry))
    assert len(found) == 2, found
    return found
