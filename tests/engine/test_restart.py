"""Restart safety: the server process is killed with SIGKILL while nodes run; a new one finishes the run."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from aihub.db.models import NodeRun
from aihub.domain.status import NodeStatus, RunStatus
from aihub.runtime import open_runtime
from aihub.settings import Settings
from tests.engine.support import wait_for_node, wait_for_run

CHILD = r"""
import asyncio, json, sys
from aihub.runtime import open_runtime
from aihub.services.runs import create_run
from aihub.services.users import create_user
from aihub.services.workflows import create_workflow
from aihub.settings import Settings

async def main():
    spec = json.loads(sys.argv[1])
    async with open_runtime(Settings()) as rt:
        user = await create_user("bob", "bob-password-1")
        version = await create_workflow(user, spec)
        run = await create_run(rt.bus, user, version.id)
        sub = rt.bus.subscribe(run.id)
        print("RUN", run.id, flush=True)
        async for event in sub:
            print("EVENT", event.node, event.node_status, flush=True)
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
                "command": count + '; while [ ! -f "$GATE" ]; do sleep 0.05; done; echo done > /tmp/b.txt',
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


@pytest.mark.parametrize("gate_before_restart", [True, False], ids=["finished-while-down", "reattached-live"])
async def test_kill_9_while_running_loses_nothing(
    settings: Settings, host_dir: Path, gate_before_restart: bool
) -> None:
    import json

    env = {
        **os.environ,
        "AIHUB_DATA_DIR": str(settings.data_dir),
        "AIHUB_DATABASE_URL": settings.resolved_database_url,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, json.dumps(_spec(host_dir)), env=env, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    run_id = None
    try:
        async with asyncio.timeout(60):
            while True:
                line = (await child.stdout.readline()).decode().split()
                assert line, "child exited early"
                if line[0] == "RUN":
                    run_id = int(line[1])
                if line[1:] == ["b", "RUNNING"]:
                    break
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert run_id is not None
    if gate_before_restart:
        (host_dir / "gate").touch()

    async with open_runtime(settings) as rt:
        if not gate_before_restart:
            await wait_for_node(rt, run_id, "b", NodeStatus.RUNNING)
            (host_dir / "gate").touch()
        run = await wait_for_run(rt, run_id)
        assert run.status is RunStatus.SUCCEEDED, run.message
        b = await NodeRun.get(run_id=run_id, name="b")
        assert (b.attempt, b.outputs["o"]["value"]) == (1, "done")
    assert (host_dir / "count").read_text().split() == ["a", "b", "c"]  # nothing ran twice
