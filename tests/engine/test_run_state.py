"""What the engine keeps of an active run (aihub.engine.state): one object per node name for the spec, the rows
and the maps between them, and shared empty containers; a run on that state still passes its values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aihub.bus.memory import MemoryBus
from aihub.db.models import NodeRun, User
from aihub.domain.compact import EMPTY_DICT, EMPTY_LIST
from aihub.domain.handover import HANDOVER, RunKey, SpecHandover
from aihub.domain.spec import parse_spec
from aihub.domain.status import NodeStatus, RunStatus
from aihub.engine import state as state_module
from aihub.engine.state import load_run_state
from aihub.runtime import Runtime
from aihub.services import runs as runs_module
from aihub.services.runs import create_run
from aihub.services.status import transition_run
from aihub.services.users import create_user
from aihub.services.workflows import create_workflow
from aihub.settings import Settings
from tests.engine.support import node_log, start_run, wait_for_node, wait_for_run
from tests.polling import gate_wait


async def test_a_run_state_keeps_one_object_per_name_and_shares_empties(
    rt: Runtime, user: User, host_dir: Path
) -> None:
    gate = host_dir / "gate"
    spec = {
        "name": "compact-state",
        "nodes": [
            {
                "name": "prepare",
                "command": gate_wait("$GATE", "-e") + "; echo 你好 > /tmp/o.txt",
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


async def test_the_engine_runs_a_new_run_on_create_run_s_own_parse(
    rt: Runtime, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``create_run`` hands its parse to the engine of its process: the engine parses nothing, and the run
    still passes its values; the handover keeps nothing after the engine took it."""
    parses: list[object] = []
    real = state_module.parse_spec
    monkeypatch.setattr(state_module, "parse_spec", lambda raw: parses.append(raw) or real(raw))
    spec = {
        "name": "handed-over",
        "nodes": [
            {
                "name": "make",
                "command": "echo 42 > /tmp/n",
                "outputs": [{"name": "n", "path": "/tmp/n", "type": "text"}],
            },
            {"name": "use", "command": 'test "$n" = 42', "inputs": [{"name": "n", "from": "make.n"}]},
        ],
    }
    run = await start_run(rt, user, spec)
    assert (await wait_for_run(rt, run.id)).status is RunStatus.SUCCEEDED
    assert parses == []
    assert HANDOVER.take((run.id, run.version_id, run.created_at)) is None  # type: ignore[attr-defined]


async def test_a_run_without_a_handed_over_parse_is_parsed_from_its_version(
    db: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process without an engine (an API replica) keeps no parse; an engine elsewhere parses the version's
    spec itself."""
    handover = SpecHandover()  # (this process's, as it is without an engine)
    monkeypatch.setattr(runs_module, "HANDOVER", handover)
    monkeypatch.setattr(state_module, "HANDOVER", handover)
    owner = await create_user("bob", "bob-password-1")
    version = await create_workflow(owner, {"name": "wf", "nodes": [{"name": "a", "command": "true"}]})
    run = await create_run(MemoryBus(), owner, version.id)
    assert len(handover) == 0
    await transition_run(MemoryBus(), run, RunStatus.RUNNING, message="test")
    state = await load_run_state(run.id)
    assert state is not None and [n.name for n in state.spec.nodes] == ["a"]


def test_the_handover_gives_a_spec_once_for_its_own_run_and_keeps_few() -> None:
    handover = SpecHandover(limit=2)
    spec = parse_spec({"name": "wf", "nodes": [{"name": "a", "command": "true"}]})
    at = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)

    def run(run_id: int, version_id: int = 10, created: datetime = at) -> RunKey:
        return (run_id, version_id, created)

    handover.give(run(1), spec)
    assert handover.take(run(1)) is None  # no engine in this process: nothing kept
    handover.open()
    handover.give(run(1), spec)
    assert handover.take(run(1, version_id=11)) is None  # another version: not this spec
    assert handover.take(run(1)) is None  # and the wrong take dropped it
    handover.give(run(1), spec)
    assert handover.take(run(1, created=at + timedelta(microseconds=1))) is None  # another run with that id
    handover.give(run(1), spec)
    assert handover.take(run(1)) is spec
    assert handover.take(run(1)) is None
    for run_id in (1, 2, 3):
        handover.give(run(run_id), spec)
    assert len(handover) == 2 and handover.take(run(1)) is None and handover.take(run(3)) is spec
    handover.close()  # the last engine of the process stops: nothing kept any more
    assert len(handover) == 0
    handover.give(run(4), spec)
    assert len(handover) == 0
