"""The web page's live log learns the attempt's end from the bus, not from a database query per poll.

The log tab's stream polls the log file every 50 ms; it asked the database on every poll whether the attempt was
over (20 open tabs: 400 queries a second). Now it watches the run's events, as the GraphQL ``nodeLogs``
subscription does, and still ends once the attempt does, with every line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aihub.services import files as files_service
from aihub.services import queries
from tests.graphql.harness import Server, wait_for
from tests.graphql.test_runs_api import start
from tests.polling import gate_wait

pytestmark = pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)


async def test_a_live_log_ends_with_its_attempt_without_polling_the_database(
    users: Server, shared_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[int, str, int]] = []
    original = queries.attempt_log_finished

    async def counting(run_id: int, node: str, number: int) -> bool:
        asked.append((run_id, node, number))
        return await original(run_id, node, number)

    monkeypatch.setattr(queries, "attempt_log_finished", counting)
    monkeypatch.setattr(files_service, "attempt_log_finished", counting)

    gate = shared_dir / "gate"
    spec = {
        "name": "live-log-end",
        "nodes": [{"name": "a", "command": f"echo one; {gate_wait(gate, '-e')}; echo two"}],
    }
    run_id = await start(users, spec)
    await wait_for(users, run_id, node="a", node_status="RUNNING")  # (attempt 1 is written)
    users.http.cookies.set("aihub_session", users.tokens["alice"])
    seen: list[str] = []
    async with users.http.stream("GET", f"/runs/{run_id}/nodes/a/logs/1/live?offset=0") as stream:
        async for line in stream.aiter_lines():
            seen.append(line)
            if line == 'data: <div class="l">one</div>':
                gate.touch()  # the node may end now: the stream must see it end
            if line == "event: end":
                break
    assert 'data: <div class="l">one</div>' in seen and 'data: <div class="l">two</div>' in seen, seen
    assert seen.index('data: <div class="l">two</div>') < seen.index("event: end")
    assert asked == [], f"the live log asked the database {len(asked)} times whether the attempt was over"
