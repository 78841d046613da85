"""How runs end (issue 11, point 11): nodes a failed run never started are SKIPPED ("not run"), and run again
on a retry; a stopped node records the exit code of its kill."""

from __future__ import annotations

from pathlib import Path

from aihub.db.models import NodeEvent, NodeRun, User
from aihub.domain.status import NodeStatus, RunStatus
from aihub.runtime import Runtime
from aihub.services.runs import retry_run, stop_run
from tests.engine.support import start_run, wait_for_node, wait_for_run


def _spec(*nodes: dict, name: str = "wf") -> dict:
    return {"name": name, "nodes": list(nodes)}


async def test_a_failed_run_leaves_no_node_waiting(rt: Runtime, user: User, host_dir: Path) -> None:
    """The hazard: after fail-fast, nodes that never started stayed WAITING for ever in a finished run."""
    gate = host_dir / "gate"
    run = await start_run(
        rt,
        user,
        _spec(
            {"name": "a", "command": f"test -e {gate}"},
            {"name": "b", "command": "echo b", "depends_on": ["a"]},
            {"name": "c", "command": "echo c", "depends_on": ["b"]},
        ),
    )
    run = await wait_for_run(rt, run.id)
    assert run.status is RunStatus.FAILED
    nodes = {n.name: n for n in await NodeRun.filter(run_id=run.id)}
    assert nodes["a"].status is NodeStatus.FAILED
    for name in ("b", "c"):
        assert nodes[name].status is NodeStatus.SKIPPED
        assert nodes[name].message == "not run: node 'a' failed"
        assert nodes[name].attempt == 0 and nodes[name].outputs == {}
    kinds = await NodeEvent.filter(run_id=run.id, node="b").values_list("kind", flat=True)
    assert "not_run" in kinds
    # a retry runs them (they have no outputs), unlike a cache hit's SKIPPED
    gate.touch()
    await retry_run(rt.bus, user, run.id)
    run = await wait_for_run(rt, run.id, statuses={RunStatus.SUCCEEDED, RunStatus.FAILED})
    assert run.status is RunStatus.SUCCEEDED, run.message
    statuses = {n.name: n.status for n in await NodeRun.filter(run_id=run.id)}
    assert statuses == {"a": NodeStatus.SUCCEEDED, "b": NodeStatus.SUCCEEDED, "c": NodeStatus.SUCCEEDED}


async def test_a_stopped_node_records_its_kill(rt: Runtime, user: User) -> None:
    """The hazard (reported by the audit, not reproduced here): a stopped node's exit code was None although
    it was killed (docs: 137 after SIGKILL). Guards that both a polite and a stubborn node record one."""
    run = await start_run(
        rt,
        user,
        _spec(
            {"name": "polite", "command": "sleep 1000"},
            {"name": "stubborn", "command": "trap '' TERM; while :; do sleep 0.1; done"},
        ),
    )
    await wait_for_node(rt, run.id, "polite", NodeStatus.RUNNING)
    await wait_for_node(rt, run.id, "stubborn", NodeStatus.RUNNING)
    await stop_run(rt.bus, user, run.id)
    run = await wait_for_run(rt, run.id)
    assert run.status is RunStatus.STOPPED
    nodes = {n.name: n for n in await NodeRun.filter(run_id=run.id)}
    assert nodes["polite"].status is NodeStatus.STOPPED
    assert nodes["polite"].exit_code == 143  # SIGTERM
    assert nodes["stubborn"].status is NodeStatus.STOPPED
    # SIGKILL after the grace period (137), or the supervisor's record of the stop (143): never None
    assert nodes["stubborn"].exit_code in (137, 143)
