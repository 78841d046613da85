"""Issue 11, point 7: the stored log of an attempt is capped (AIHUB_MAX_LOG_BYTES), head and tail kept."""

from __future__ import annotations

import pytest

from aihub.db.models import User
from aihub.domain.status import RunStatus
from aihub.runtime import Runtime
from aihub.settings import Settings
from tests.engine.support import start_run, wait_for_run

LIMIT = 64 * 1024


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.max_log_bytes = LIMIT
    return settings


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
async def test_a_flooding_node_keeps_the_head_and_tail_of_its_log(rt: Runtime, user: User) -> None:
    """The hazard: a node wrote 213 MB of log; one could fill the server's disk."""
    command = 'i=0; while [ $i -lt 40000 ]; do echo "line $i of a long log"; i=$((i+1)); done'
    run = await start_run(rt, user, {"name": "noisy", "nodes": [{"name": "n", "command": command}]})
    run = await wait_for_run(rt, run.id, timeout=120)
    assert run.status is RunStatus.SUCCEEDED, run.message
    data = rt.logs.path(run.id, "n", 1).read_bytes()
    assert len(data) <= LIMIT
    assert data.startswith(b"line 0 of a long log\n")
    assert data.endswith(b"line 39999 of a long log\n")
    assert b"bytes of this log were dropped here (the limit is 65536 bytes, AIHUB_MAX_LOG_BYTES)" in data
