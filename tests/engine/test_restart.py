"""Restart safety: the server process is killed with SIGKILL while nodes run; a new one finishes the run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from aihub.db.models import Attempt, NodeRun
from aihub.domain.status import NodeStatus, RunStatus
from aihub.runtime import open_runtime
from aihub.settings import Settings
from tests.engine.support import wait_for_node, wait_for_run
from tests.polling import gate_wait, until

CHILD = r"""
import asyncio, json, sys
from aihub.runtime import open_runtime
from aihub.services.runs import create_run
from aihub.services.users import create_user
from aihub.services.workflows import create_workflow
from aihub.settings import Settings

async def main():
    spec = json.loads(sys.argv[1])
    if len(sys.argv) > 2:  # hold each start this long (seconds) before it is written
        from aihub.engine import attempts
        attempts.START_WRITE_DELAY = float(sys.argv[2])
    async with open_runtime(Settings()) as rt:
        user = await create_user("bob", "bob-password-1")
        version = await create_workflow(user, spec)
        run = await create_run(rt.bus, user, version.id)
        sub = rt.bus.subscribe(run.id)
        print("RUN", run.id, flush=True)
        async for event in sub:
            print("EVENT", event.node, event.node_status, event.attempt, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def _spec(tmp: Path) -> dict:
    env = {"COUNT": str(tmp / "count"), "GATE": str(tmp / "gate")}
    count = 'echo "$N" >> "$COUNT"'
    return {
        "name": "restartable",
        "nodes": [
            {"name": "a", "command": count, "env": {**env, "N": "a"}},
            {
                "name": "b",
                "command": count + "; " + gate_wait("$GATE") + "; echo done > /tmp/b.txt",
                "env": {**env, "N": "b"},
                "depends_on": ["a"],
                "outputs": [{"name": "o", "path": "/tmp/b.txt", "type": "text"}],
            },
            {
                "name": "c",
                "command": count + '; echo "$v"',
                "env": {**env, "N": "c"},
                "inputs": [{"name": "v", "from": "b.o"}],
            },
        ],
    }


async def _run_in_child_until(
    settings: Settings, spec: dict, stop_at: list[str], held: tuple[float, Path, str] | None = None
) -> int:
    """Start a run in a server process of its own; kill it with SIGKILL once a node event starts with
    ``stop_at`` (node, status[, attempt]), or, with ``held`` (delay, file, word), once that file has that word,
    each start held that long. Returns the run's id."""
    env = {
        **os.environ,
        "AIHUB_DATA_DIR": str(settings.data_dir),
        "AIHUB_DATABASE_URL": settings.resolved_database_url,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    delay = [str(held[0])] if held else []
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, json.dumps(spec), *delay, env=env, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    run_id, line = None, []
    try:
        async with asyncio.timeout(60):
            while run_id is None or (held is None and line[1 : 1 + len(stop_at)] != stop_at):
                line = (await child.stdout.readline()).decode().split()
                assert line, "child exited early"
                if line[0] == "RUN":
                    run_id = int(line[1])
        if held is not None:
            _, path, word = held
            await until(lambda: path.exists() and word in path.read_text().split(), f"{word} in {path}")
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert run_id is not None
    return run_id


@pytest.mark.parametrize("gate_before_restart", [True, False], ids=["finished-while-down", "reattached-live"])
async def test_kill_9_while_running_loses_nothing(
    settings: Settings, host_dir: Path, gate_before_restart: bool
) -> None:
    run_id = await _run_in_child_until(settings, _spec(host_dir), ["b", "RUNNING"])
    await _finish_after_restart(settings, run_id, host_dir, gate_before_restart)


async def _finish_after_restart(settings: Settings, run_id: int, host_dir: Path, gate_before: bool) -> None:
    """A new server finishes the run of ``_spec`` (``b`` let go on before it starts, or once it follows ``b``):
    ``b`` ran once, as attempt 1, with its output, and nothing ran twice."""
    if gate_before:
        (host_dir / "gate").touch()
    async with open_runtime(settings) as rt:
        if not gate_before:
            await wait_for_node(rt, run_id, "b", NodeStatus.RUNNING)
            (host_dir / "gate").touch()
        run = await wait_for_run(rt, run_id)
        assert run.status is RunStatus.SUCCEEDED, run.message
        b = await NodeRun.get(run_id=run_id, name="b")
        assert (b.attempt, b.outputs["o"]["value"]) == (1, "done")
        assert await Attempt.filter(node_run_id=b.id).count() == 1
    assert (host_dir / "count").read_text().split() == ["a", "b", "c"]  # nothing ran twice


async def test_kill_9_while_a_start_is_held_runs_nothing_twice(settings: Settings, host_dir: Path) -> None:
    """The server is killed after it launched ``b`` and before it wrote its start (held: the database says
    WAITING): the next server finds ``b`` through the executor, follows it, and runs it once."""
    run_id = await _run_in_child_until(settings, _spec(host_dir), [], held=(3600, host_dir / "count", "b"))
    async with open_runtime(settings, run_engine=False):
        b = await NodeRun.get(run_id=run_id, name="b")
        assert (b.status, b.attempt) == (NodeStatus.WAITING, 0)
        assert not await Attempt.filter(node_run_id=b.id).exists()
    await _finish_after_restart(settings, run_id, host_dir, gate_before=False)


async def test_kill_9_between_attempts_keeps_the_retries_used(settings: Settings, host_dir: Path) -> None:
    """A ``retries: 2`` node that always fails runs exactly 3 times, even when the server is killed between
    two of its attempts: the automatic retries it used are stored with the node, not only in memory."""
    count, gate = host_dir / "count", host_dir / "gate"
    command = (
        f'echo x >> "{count}"; if [ "$(wc -l < "{count}")" -eq 2 ]; then ' + gate_wait(gate) + "; fi; exit 3"
    )
    spec = {"name": "flaky", "nodes": [{"name": "f", "command": command, "retries": 2}]}
    run_id = await _run_in_child_until(settings, spec, ["f", "RUNNING", "2"])
    gate.touch()  # attempt 2 fails while no server runs

    async with open_runtime(settings) as rt:
        run = await wait_for_run(rt, run_id)
        assert run.status is RunStatus.FAILED, run.message
        node = await NodeRun.get(run_id=run_id, name="f")
        assert (node.status, node.attempt, node.auto_retries) == (NodeStatus.FAILED, 3, 2)
        assert await Attempt.filter(node_run_id=node.id).count() == 3
    assert count.read_text().split() == ["x", "x", "x"]  # exactly 3 attempts in all
