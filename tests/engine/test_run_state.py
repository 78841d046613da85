"""What the engine keeps of an active run (aihub.engine.state): one object per node name for the spec, the rows
and the maps between them, and shared empty containers; a run on that state still passes its values."""

from __future__ import annotations

from pathlib import Path

from aihub.db.models import NodeRun, User
from aihub.domain.compact import EMPTY_DICT, EMPTY_LIST
from aihub.domain.status import NodeStatus, RunStatus
from aihub.engine.state import load_run_state
from aihub.runtime import Runtime
from tests.engine.support import node_log, start_run, wait_for_node, wait_for_run


async def test_a_run_state_keeps_one_object_per_name_and_shares_empties(
    rt: Runtime, user: User, host_dir: Path
) -> None:
    gate = host_dir / "gate"
    spec = {
        "name": "compact-state",
        "nodes": [
            {
                "name": "prepare",
                "command": 'while [ ! -e "$GATE" ]; do sleep 0.05; done; echo 你好 > /tmp/o.txt',
                "env": {"GATE": str(gate)},
                "outputs": [{"name": "o", "path": "/tmp/o.txt", "type": "text"}],
            },
            {"name": "train", "command": 'echo "got $o"', "inputs": [{"name": "o", "from": "prepare.o"}]},
            {"name": "score", "command": "true", "depends_on": ["train"]},
        ],
    }
    run = await start_run(rt, user, spec)
    await wait_for_node(rt, run.id, "prepare", NodeStatus.RUNNING)

    state = await load_run_state(run.id)
    assert state is not None
    for name, row in state.nodes.items():
        assert row.name is state.spec.node(name).name
        assert row.run_id == run.id
    assert state.parents["train"] == ["prepare"]
    assert state.parents["train"][0] is state.spec.node("prepare").name
    assert state.children["prepare"][0] is state.spec.node("train").name
    assert state.parents["prepare"] is EMPTY_LIST and state.children["score"] is EMPTY_LIST
    assert state.nodes["score"].inputs is EMPTY_DICT and state.nodes["score"].outputs is EMPTY_DICT
    assert state.spec.node("score").env is EMPTY_DICT and state.spec.node("prepare").depends_on is EMPTY_LIST

    gate.touch()
    ended = await wait_for_run(rt, run.id)
    assert ended.status is RunStatus.SUCCEEDED
    rows = {r.name: r for r in await NodeRun.filter(run_id=run.id)}
    assert "o" in rows["prepare"].outputs and "o" in rows["train"].inputs
    assert rows["score"].inputs == {} and rows["score"].outputs == {}
    assert "got 你好" in await node_log(rt, run.id, "train")
