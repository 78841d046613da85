"""Issue 11, point 5: an operation's cost is bounded before it runs (fields x list sizes, log bytes)."""

from __future__ import annotations

from typing import Any

import pytest

from aihub.db.models import Attempt, NodeRun, Run
from aihub.domain.status import NodeStatus, RunStatus
from aihub.services.workflows import create_workflow
from tests.graphql.harness import Server

pytestmark = [
    pytest.mark.usefixtures("users"),
    pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True),
]


@pytest.fixture
def app_options() -> dict[str, Any]:
    return {"run_engine": False}


async def _run_with_big_logs(server: Server, nodes: int = 2, size: int = 1 << 20) -> Run:
    """A finished run (made without the engine) whose nodes each logged ``size`` bytes."""
    alice = server.users["alice"]
    spec = {"name": "noisy", "nodes": [{"name": f"n{i}", "command": "true"} for i in range(nodes)]}
    version = await create_workflow(alice, spec)
    run = await Run.create(
        version=version,
        workflow_id=version.workflow_id,
        owner=alice,
        name="noisy",
        status=RunStatus.SUCCEEDED,
        params={},
    )
    for i in range(nodes):
        node = await NodeRun.create(run=run, name=f"n{i}", status=NodeStatus.SUCCEEDED, attempt=1)
        await Attempt.create(node_run=node, number=1, status=NodeStatus.SUCCEEDED, exit_code=0)
        log = server.rt.logs.path(run.id, f"n{i}", 1)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_bytes(b"x" * size)
    return run


def _aliases(count: int, limit: int) -> str:
    body = f"run(id: $id) {{ nodes {{ logs(limit: {limit}) {{ text }} }} }}"
    return "query($id: ID!) { " + " ".join(f"a{i}: {body}" for i in range(count)) + " }"


async def test_aliased_log_reads_are_refused_before_they_run(users: Server) -> None:
    """The hazard: 30 aliases of run{nodes{logs(limit:1048576)}} answered 63 MB to a 2.5 KB query."""
    run = await _run_with_big_logs(users)
    response = await users.post(_aliases(30, 1 << 20), {"id": str(run.id)}, as_="alice")
    assert response["data"] is None
    [error] = response["errors"]
    assert error["extensions"]["code"] == "QUERY_TOO_COSTLY"
    assert "of logs, more than the limit of 67108864 (AIHUB_MAX_QUERY_LOG_BYTES)" in error["message"]
    # a fragment, or the limit in a variable, costs the same
    fragment = (
        "query($id: ID!, $l: Int!) { a: run(id: $id) { ...N } b: run(id: $id) { ...N } c: run(id: $id) { ...N }"
        " d: run(id: $id) { ...N } }"
        " fragment N on Run { nodes { logs(limit: $l) { text } } }"
    )
    error = await users.error(fragment, {"id": str(run.id), "l": 1 << 20}, as_="alice")
    assert error["extensions"]["code"] == "QUERY_TOO_COSTLY"
    # a modest read of the same logs is answered
    data = await users.gql(_aliases(2, 65536), {"id": str(run.id)}, as_="alice")
    assert len(data["a0"]["nodes"][0]["logs"]["text"]) == 65536


async def test_wide_lists_count_their_size(users: Server) -> None:
    many = (
        "{ runs(first: 1000) { items { nodes { attempts { number status message exitCode }"
        " events { kind message attempt } } } } }"
    )
    error = await users.error(many, as_="alice")
    assert error["extensions"]["code"] == "QUERY_TOO_COSTLY"
    assert "points, more than the limit of 1000000 (AIHUB_MAX_QUERY_COST)" in error["message"]
    assert (await users.gql("{ runs(first: 50) { items { nodes { name } } } }", as_="alice"))["runs"]


async def test_introspection_is_not_counted(users: Server) -> None:
    from graphql import get_introspection_query

    data = await users.gql(get_introspection_query(descriptions=True))
    assert data["__schema"]["queryType"]["name"] == "Query"
