"""The run loop through the real services, real database and real local processes."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from aihub.db.models import Attempt, NodeEvent, NodeRun, User
from aihub.domain.status import NodeStatus, RunStatus
from aihub.runtime import Runtime
from aihub.services.errors import Conflict, InvalidInput
from aihub.services.runs import copy_run, retry_run, stop_run
from tests.engine.support import node_log, start_run, wait_for_node, wait_for_run
from tests.polling import gate_wait

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def spec(*nodes: dict, params: list | None = None, name: str = "wf") -> dict:
    return {"name": name, "params": params or [], "nodes": list(nodes)}


async def test_seed_example_prints_the_five_lines(rt: Runtime, user: User) -> None:
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
    step1 = await NodeRun.get(run_id=run.id, name="step1")
    assert step1.outputs["output_param1"]["value"] == "outparam1"
    assert step1.outputs["output_param2"]["type"] == "path"
    assert len(step1.outputs["output_param2"]["digest"]) == 64
    assert await rt.artifacts.exists(step1.outputs["output_param3"]["digest"])
    step2 = await NodeRun.get(run_id=run.id, name="step2")
    assert step2.inputs["step1param2"] == "/tmp/outparam2.txt"


async def test_values_are_never_shell_code(rt: Runtime, user: User, host_dir: Path) -> None:
    target = host_dir / "pwned"
    evil = f"$(touch {target}); `touch {target}`; echo hi > {target}"
    run = await start_run(
        rt,
        user,
        spec(
            {
                "name": "a",
                "command": 'printf "%s\\n" "$x" "$AI_HUB_WORKFLOW_RUN_ID"',
                "inputs": [{"name": "x", "from": "params.p"}],
            },
            params=[{"name": "p"}],
        ),
        p=evil,
    )
    run = await wait_for_run(rt, run.id)
    assert run.status is RunStatus.SUCCEEDED
    assert (await node_log(rt, run.id, "a")).splitlines() == [evil, str(run.id)]
    assert not target.exists()


async def test_injected_env(rt: Runtime, user: User) -> None:
    run = await start_run(
        rt,
        user,
        spec(
            {
                "name": "a",
                "command": 'echo "$AI_HUB_USER_ID"; echo "${AI_HUB_TOKEN%%_*}"; echo "$AI_HUB_API_URL"; ls -A /tmp/workflow_space | wc -l',
            }
        ),
    )
    run = await wait_for_run(rt, run.id)
    assert run.status is RunStatus.SUCCEEDED
    lines = (await node_log(rt, run.id, "a")).split()
    assert lines[:3] == [str(user.id), "aih", rt.settings.resolved_api_url]
    assert lines[3] == "0"


async def test_fail_fast_stops_new_nodes(rt: Runtime, user: User) -> None:
    run = await start_run(
        rt,
        user,
        spec(
            {"name": "bad", "command": "echo broken >&2; exit 3"},
            {"name": "after", "command": "echo never", "depends_on": ["bad"]},
        ),
    )
    run = await wait_for_run(rt, run.id)
    assert run.status is RunStatus.FAILED
    assert "bad" in run.message and "exited with code 3" in run.message
    bad = await NodeRun.get(run_id=run.id, name="bad")
    after = await NodeRun.get(run_id=run.id, name="after")
    assert (bad.status, bad.exit_code) == (NodeStatus.FAILED, 3)
    assert after.status is NodeStatus.SKIPPED and after.attempt == 0  # never started: not run
    assert "broken" in await node_log(rt, run.id, "bad")


async def test_automatic_retries_are_recorded(rt: Runtime, user: User, host_dir: Path) -> None:
    marker = host_dir / "tries"
    command = 'echo x >> "$MARK"; [ "$(wc -l < "$MARK")" -ge 3 ]'
    run = await start_run(
        rt, user, spec({"name": "flaky", "command": command, "retries": 2, "env": {"MARK": str(marker)}})
    )
    run = await wait_for_run(rt, run.id)
    assert run.status is RunStatus.SUCCEEDED
    node = await NodeRun.get(run_id=run.id, name="flaky")
    assert (node.attempt, node.retry_count) == (3, 2)
    attempts = await Attempt.filter(node_run_id=node.id).order_by("number")
    assert [(a.number, a.status, a.exit_code) for a in attempts] == [
        (1, NodeStatus.FAILED, 1),
        (2, NodeStatus.FAILED, 1),
        (3, NodeStatus.SUCCEEDED, 0),
    ]
    kinds = await NodeEvent.filter(run_id=run.id, node="flaky").order_by("id").values_list("kind", flat=True)
    assert kinds.count("retry") == 2 and kinds.count("started") == 3


async def test_retries_exhausted_fail_the_run(rt: Runtime, user: User) -> None:
    run = await start_run(rt, user, spec({"name": "a", "command": "exit 7", "retries": 1}))
    run = await wait_for_run(rt, run.id)
    assert run.status is RunStatus.FAILED
    node = await NodeRun.get(run_id=run.id, name="a")
    assert (node.status, node.attempt, node.exit_code) == (NodeStatus.FAILED, 2, 7)


async def test_stop_terminates_and_never_retries(rt: Runtime, user: User) -> None:
    run = await start_run(
        rt,
        user,
        spec(
            {"name": "slow", "command": "sleep 1000", "retries": 3},
            {"name": "later", "command": "true", "depends_on": ["slow"]},
        ),
    )
    await wait_for_node(rt, run.id, "slow", NodeStatus.RUNNING)
    await stop_run(rt.bus, user, run.id)
    run = await wait_for_run(rt, run.id)
    assert run.status is RunStatus.STOPPED
    slow = await NodeRun.get(run_id=run.id, name="slow")
    later = await NodeRun.get(run_id=run.id, name="later")
    assert (slow.status, slow.attempt) == (NodeStatus.STOPPED, 1)
    assert later.status is NodeStatus.STOPPED
    with pytest.raises(Conflict, match="cannot be stopped"):
        await stop_run(rt.bus, user, run.id)


async def test_retry_in_place_keeps_successes(rt: Runtime, user: User, host_dir: Path) -> None:
    count, gate = host_dir / "count", host_dir / "gate"
    run = await start_run(
        rt,
        user,
        spec(
            {
                "name": "a",
                "command": 'echo run >> "$COUNT"; echo "$COUNT" > /tmp/o.txt',
                "env": {"COUNT": str(count)},
                "outputs": [{"name": "o", "path": "/tmp/o.txt", "type": "text"}],
            },
            {
                "name": "b",
                "command": '[ -f "$GATE" ]',
                "env": {"GATE": str(gate)},
                "inputs": [{"name": "v", "from": "a.o"}],
            },
        ),
    )
    run = await wait_for_run(rt, run.id)
    assert run.status is RunStatus.FAILED
    with pytest.raises(Conflict, match="only a finished run can be retried"):
        await _retry_running(rt, user)
    gate.touch()
    await retry_run(rt.bus, user, run.id)
    run = await wait_for_run(rt, run.id)
    assert (run.status, run.retry_count) == (RunStatus.SUCCEEDED, 1)
    assert count.read_text().splitlines() == ["run"]  # a kept its outputs and was not re-run
    b = await NodeRun.get(run_id=run.id, name="b")
    assert (b.attempt, b.retry_count, b.inputs) == (2, 1, {"v": str(count)})


async def _retry_running(rt: Runtime, user: User) -> None:
    run = await start_run(rt, user, spec({"name": "s", "command": "sleep 1000"}, name="other"))
    await wait_for_node(rt, run.id, "s", NodeStatus.RUNNING)
    try:
        await retry_run(rt.bus, user, run.id)
    finally:
        await stop_run(rt.bus, user, run.id)
        await wait_for_run(rt, run.id)


async def test_retry_from_node_reruns_descendants(rt: Runtime, user: User, host_dir: Path) -> None:
    count = host_dir / "count"
    env = {"COUNT": str(count)}
    run = await start_run(
        rt,
        user,
        spec(
            {"name": "a", "command": 'echo a >> "$COUNT"', "env": env},
            {"name": "b", "command": 'echo b >> "$COUNT"', "env": env, "depends_on": ["a"]},
            {"name": "c", "command": 'echo c >> "$COUNT"', "env": env, "depends_on": ["b"]},
        ),
    )
    run = await wait_for_run(rt, run.id)
    assert run.status is RunStatus.SUCCEEDED
    with pytest.raises(Conflict, match="nothing to retry"):
        await retry_run(rt.bus, user, run.id)
    with pytest.raises(InvalidInput, match="no node 'zz'"):
        await retry_run(rt.bus, user, run.id, from_node="zz")
    await retry_run(rt.bus, user, run.id, from_node="b")
    run = await wait_for_run(rt, run.id)
    assert run.status is RunStatus.SUCCEEDED
    assert count.read_text().split() == ["a", "b", "c", "b", "c"]


async def test_copy_run_with_overrides(rt: Runtime, user: User) -> None:
    run = await start_run(
        rt,
        user,
        spec(
            {
                "name": "a",
                "command": 'echo "$x-$y"',
                "inputs": [{"name": "x", "from": "params.x"}, {"name": "y", "from": "params.y"}],
            },
            params=[{"name": "x"}, {"name": "y", "default": "d"}],
        ),
        x="one",
    )
    run = await wait_for_run(rt, run.id)
    copy = await copy_run(rt.bus, user, run.id, params={"y": "two"})
    assert copy.id != run.id and copy.copied_from_id == run.id
    copy = await wait_for_run(rt, copy.id)
    assert copy.params == {"x": "one", "y": "two"}
    assert (await node_log(rt, copy.id, "a")).strip() == "one-two"
    with pytest.raises(InvalidInput, match="nope"):
        await copy_run(rt.bus, user, run.id, params={"nope": "1"})


async def test_text_output_too_long_fails_with_reason(rt: Runtime, user: User) -> None:
    run = await start_run(
        rt,
        user,
        spec(
            {
                "name": "a",
                "command": "head -c 1500 /dev/zero | tr '\\0' x > /tmp/t",
                "outputs": [{"name": "t", "path": "/tmp/t", "type": "text"}],
            }
        ),
    )
    run = await wait_for_run(rt, run.id)
    node = await NodeRun.get(run_id=run.id, name="a")
    assert node.status is NodeStatus.FAILED
    assert "'t'" in node.message and "1500" in node.message


async def test_node_too_big_for_its_cluster(rt: Runtime, user: User) -> None:
    run = await start_run(rt, user, spec({"name": "huge", "command": "true", "sku_count": 4096}))
    run = await wait_for_run(rt, run.id)
    node = await NodeRun.get(run_id=run.id, name="huge")
    assert node.status is NodeStatus.FAILED
    assert "cluster 'local'" in node.message
    # it never ran: WAITING -> FAILED, with no invented attempt and no "started" event
    assert (node.attempt, await Attempt.filter(node_run_id=node.id).count()) == (0, 0)
    kinds = await NodeEvent.filter(run_id=run.id, node="huge").values_list("kind", flat=True)
    assert kinds == ["failed"]


@pytest.mark.parametrize("cpus", [1])
async def test_capacity_serialises_compute_nodes(rt: Runtime, user: User, cpus: int) -> None:
    rt.settings.local_cpus = cpus
    await rt.engine.load_pools()
    run = await start_run(rt, user, spec(*({"name": f"n{i}", "command": "sleep 0.2"} for i in range(3))))
    run = await wait_for_run(rt, run.id)
    assert run.status is RunStatus.SUCCEEDED
    attempts = sorted(
        [await Attempt.get(node_run__run_id=run.id, node_run__name=f"n{i}") for i in range(3)],
        key=lambda a: a.started_at,
    )
    for before, after in itertools.pairwise(attempts):
        assert after.started_at >= before.finished_at


async def test_monitor_tasks_share_a_cpu(rt: Runtime, user: User, host_dir: Path) -> None:
    """Monitor tasks ask for 100m CPU, so three of them run at once on a one-CPU cluster."""
    rt.settings.local_cpus = 1
    await rt.engine.load_pools()
    wait_all = 'touch "$D/$N"; for i in $(seq 1 200); do [ "$(ls "$D" | wc -l)" -ge 3 ] && exit 0; sleep 0.05; done; exit 1'
    nodes = [
        {
            "name": f"m{i}",
            "command": wait_all,
            "task_type": "monitor",
            "env": {"D": str(host_dir), "N": str(i)},
        }
        for i in range(3)
    ]
    run = await wait_for_run(rt, (await start_run(rt, user, spec(*nodes))).id)
    assert run.status is RunStatus.SUCCEEDED


RUN_OR_NODE_STATUS_WRITE = re.compile(
    r"\b\w*(run|node|attempt|module|build|review)\w*\.status\s*=[^=]|\.update\([^)]*\bstatus=", re.IGNORECASE
)


async def test_only_the_status_service_assigns_status() -> None:
    """Hazard: a status written outside services/status.py bypasses the transition table and the bus (runs,
    nodes, attempts, modules, builds, reviews; assigned, or in a bulk ``update``)."""
    root = Path(__file__).resolve().parents[2] / "aihub"
    offenders = [
        f"{p.relative_to(root)}:{i}"
        for p in root.rglob("*.py")
        if p.name != "status.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if RUN_OR_NODE_STATUS_WRITE.search(line)
    ]
    assert offenders == []


async def test_thousand_node_run(rt: Runtime, user: User) -> None:
    """A 1,000-node run (10 layers of 100, each node after one node of the layer before) completes."""
    nodes = [
        {
            "name": f"n{layer}_{i}",
            "command": "true",
            **({"depends_on": [f"n{layer - 1}_{i}"]} if layer else {}),
        }
        for layer in range(10)
        for i in range(100)
    ]
    run = await start_run(rt, user, spec(*nodes))
    run = await wait_for_run(rt, run.id, timeout=300)
    assert run.status is RunStatus.SUCCEEDED
    assert await NodeRun.filter(run_id=run.id, status=NodeStatus.SUCCEEDED).count() == 1000


async def test_dozens_of_concurrent_runs(rt: Runtime, user: User) -> None:
    from aihub.services.runs import create_run
    from aihub.services.workflows import create_workflow

    version = await create_workflow(
        user,
        spec(
            {
                "name": "a",
                "command": 'echo "$x" > /tmp/o',
                "inputs": [{"name": "x", "from": "params.x"}],
                "outputs": [{"name": "o", "path": "/tmp/o", "type": "text"}],
            },
            {"name": "b", "command": 'echo "$v"', "inputs": [{"name": "v", "from": "a.o"}]},
            params=[{"name": "x"}],
        ),
    )
    runs = [await create_run(rt.bus, user, version.id, params={"x": f"run{i}"}) for i in range(30)]
    for i, run in enumerate(runs):
        done = await wait_for_run(rt, run.id, timeout=300)
        assert done.status is RunStatus.SUCCEEDED
        assert (await node_log(rt, run.id, "b")).strip() == f"run{i}"


async def test_stop_racing_the_start_of_a_run(rt: Runtime, user: User) -> None:
    """Hazard: a stop arriving while the engine starts the run must not be lost, nor be overwritten."""
    for i in range(5):
        run = await start_run(rt, user, spec({"name": "s", "command": "sleep 1000"}, name=f"racy{i}"))
        stopped = await stop_run(rt.bus, user, run.id)  # races the engine's activation
        assert stopped.status in (RunStatus.STOPPED, RunStatus.STOPPING)
        run = await wait_for_run(rt, run.id)
        assert run.status is RunStatus.STOPPED
        node = await NodeRun.get(run_id=run.id, name="s")
        assert node.status is NodeStatus.STOPPED


async def test_engine_survives_falling_behind_the_bus(rt: Runtime, user: User) -> None:
    """Hazard: a burst of events bigger than the engine's buffer must not kill its listener."""
    from aihub.bus.base import RunEvent

    for i in range(10_001):  # no yield: the engine's subscription overflows
        await rt.bus.publish(
            RunEvent(run_id=10**9, run_status="RUNNING", node=f"n{i}", node_status="WAITING")
        )
    run = await start_run(rt, user, spec({"name": "a", "command": "echo alive"}))
    run = await wait_for_run(rt, run.id)
    assert run.status is RunStatus.SUCCEEDED
    assert (await node_log(rt, run.id, "a")).strip() == "alive"


async def test_ml_pipeline_example_trains_and_evaluates(rt: Runtime, user: User) -> None:
    """examples/ml-pipeline.yaml: path outputs (dataset, model) and text outputs (loss, accuracy) flow."""
    run = await start_run(rt, user, (EXAMPLES / "ml-pipeline.yaml").read_text(), epochs="50")
    run = await wait_for_run(rt, run.id, timeout=120)
    assert run.status is RunStatus.SUCCEEDED, run.message
    train = await NodeRun.get(run_id=run.id, name="train")
    evaluate = await NodeRun.get(run_id=run.id, name="evaluate")
    assert train.outputs["model"]["type"] == "path" and await rt.artifacts.exists(
        train.outputs["model"]["digest"]
    )
    assert float(train.outputs["final_loss"]["value"]) < 0.7  # better than chance (ln 2)
    assert 0.7 <= float(evaluate.outputs["accuracy"]["value"]) <= 1.0


async def test_a_cluster_created_after_start_is_used_with_its_capacity(rt: Runtime, user: User) -> None:
    """Hazard: a cluster unknown to the engine's pools silently ran its nodes on the local pool."""
    from aihub.db.models import VirtualCluster

    await VirtualCluster.create(name="tiny", cpu_millis=500, memory_mib=256, capacity=1)
    nodes = [{"name": f"n{i}", "command": "sleep 0.2", "cluster": "tiny"} for i in range(2)]
    run = await wait_for_run(rt, (await start_run(rt, user, spec(*nodes))).id)
    assert run.status is RunStatus.SUCCEEDED
    first, second = sorted(
        [await Attempt.get(node_run__run_id=run.id, node_run__name=f"n{i}") for i in range(2)],
        key=lambda a: a.started_at,
    )
    assert second.started_at >= first.finished_at  # one SKU: the two nodes ran one after the other
    assert rt.engine.capacity.pools["tiny"].used_cpu == 0  # and the reservations were given back


async def test_nodes_waiting_for_a_deleted_cluster_fail_clearly(
    rt: Runtime, user: User, host_dir: Path
) -> None:
    """Hazard: the dispatcher looked up the pool of a deleted cluster and raised, leaving the run hanging."""
    from aihub.db.models import VirtualCluster

    cluster = await VirtualCluster.create(name="solo", cpu_millis=500, memory_mib=256, capacity=1)
    gate = host_dir / "gate"
    nodes = [
        {"name": "a", "command": gate_wait(gate, "-e"), "cluster": "solo"},
        {"name": "b", "command": "true", "cluster": "solo"},
    ]
    run = await start_run(rt, user, spec(*nodes))
    await wait_for_node(rt, run.id, "a", NodeStatus.RUNNING)
    b = await NodeRun.get(run_id=run.id, name="b")
    assert b.status is NodeStatus.WAITING  # one SKU: b waits for a
    await cluster.delete()
    await rt.engine.load_pools()
    gate.touch()
    run = await wait_for_run(rt, run.id)
    assert run.status is RunStatus.FAILED
    a, b = await NodeRun.get(run_id=run.id, name="a"), await NodeRun.get(run_id=run.id, name="b")
    assert a.status is NodeStatus.SUCCEEDED
    assert b.status is NodeStatus.FAILED
    assert b.message == "virtual cluster 'solo' was deleted while the node waited for it"
