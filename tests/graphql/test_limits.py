"""No N+1: the number of SQL queries of a request does not grow with the number of runs or nodes it returns.
And the document limits: depth, tokens, aliases; batching off."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tortoise import connections

from aihub.db.models import Attempt, NodeEvent, NodeRun, Run, User
from aihub.domain.status import NodeStatus, RunStatus
from aihub.services.runs import create_run
from aihub.services.workflows import create_workflow
from tests.graphql.harness import Server

pytestmark = pytest.mark.usefixtures("users")

RUN_DETAIL = """query($id: ID!) { run(id: $id) {
  id name status params retryCount createdAt startedAt finishedAt
  owner { username team { name } } version { number spec workflow { name owner { username } } } workflow { name }
  nodes { name status retryCount attempt inputs message exitCode startedAt finishedAt
    outputs { name value } attempts { number status exitCode message } events { kind message } }
  events { kind }
} }"""
RUN_LIST = """query($n: Int!) { runs(first: $n) { nextCursor items {
  id name status owner { username } version { number workflow { name owner { username } } } workflow { name }
  nodes { name status attempts { number } }
} } }"""


@pytest.fixture
def app_options() -> dict[str, Any]:
    return {"run_engine": False}


class QueryCounter:
    def __init__(self) -> None:
        self.queries: list[str] = []

    def __len__(self) -> int:
        return len(self.queries)


@pytest.fixture
def sql(users: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[QueryCounter]:
    """Counts every statement sent through the database client (a spy: the real methods still run)."""
    counter = QueryCounter()
    client_class = type(connections.get("default"))
    for name in ("execute_query", "execute_query_dict", "execute_insert", "execute_many"):
        original = getattr(client_class, name)

        def spy(self: Any, query: str, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            counter.queries.append(query)
            return _original(self, query, *args, **kwargs)

        monkeypatch.setattr(client_class, name, spy)
    yield counter


async def count(
    server: Server, counter: QueryCounter, query: str, variables: dict[str, Any]
) -> tuple[int, Any]:
    await server.gql("{ me { username } }", {}, as_="alice")  # the token's lookup, cached from then on
    before = len(counter)
    data = await server.gql(query, variables, as_="alice")
    return len(counter) - before, data


def chain(n: int, name: str) -> dict[str, Any]:
    nodes = [
        {"name": f"n{i}", "command": "true", **({"depends_on": [f"n{i - 1}"]} if i else {})} for i in range(n)
    ]
    return {"name": name, "nodes": nodes}


async def big_run(user: User, server: Server, nodes: int) -> Run:
    version = await create_workflow(user, chain(nodes, f"chain-{nodes}"))
    run = await create_run(server.rt.bus, user, version.id)
    rows = await NodeRun.filter(run_id=run.id)
    await Attempt.bulk_create(
        [Attempt(node_run_id=r.id, number=1, status=NodeStatus.SUCCEEDED, exit_code=0) for r in rows],
        batch_size=1000,
    )
    await NodeEvent.bulk_create(
        [
            NodeEvent(run_id=run.id, node=r.name, attempt=1, kind=k, message=k)
            for r in rows
            for k in ("started", "exited")
        ],
        batch_size=1000,
    )
    await NodeRun.filter(run_id=run.id).update(status=NodeStatus.SUCCEEDED, attempt=1)
    return run


async def test_run_detail_queries_do_not_grow_with_nodes(users: Server, sql: QueryCounter) -> None:
    alice = users.users["alice"]
    small, big = await big_run(alice, users, 10), await big_run(alice, users, 5000)
    small_count, small_data = await count(users, sql, RUN_DETAIL, {"id": small.id})
    big_count, big_data = await count(users, sql, RUN_DETAIL, {"id": big.id})
    assert len(small_data["run"]["nodes"]) == 10 and len(big_data["run"]["nodes"]) == 5000
    node = big_data["run"]["nodes"][4999]
    assert node["name"] == "n4999" and node["attempts"] == [
        {"number": 1, "status": "SUCCEEDED", "exitCode": 0, "message": ""}
    ]
    assert [e["kind"] for e in node["events"]] == ["started", "exited"]
    assert big_count == small_count <= 15, sql.queries[-big_count:]


async def test_run_listing_queries_do_not_grow_with_runs(users: Server, sql: QueryCounter) -> None:
    alice = users.users["alice"]
    versions = [await create_workflow(alice, chain(3, f"wf-{i}")) for i in range(5)]
    runs = [
        Run(
            name=f"r{i}",
            version_id=v.id,
            workflow_id=v.workflow_id,
            owner_id=alice.id,
            status=RunStatus.PENDING,
        )
        for i in range(1000)
        for v in [versions[i % 5]]
    ]
    await Run.bulk_create(runs, batch_size=500)
    ids = await Run.all().order_by("id").values_list("id", flat=True)
    await NodeRun.bulk_create(
        [NodeRun(run_id=i, name=f"n{k}") for i in ids for k in range(3)], batch_size=1000
    )
    ten_count, ten = await count(users, sql, RUN_LIST, {"n": 10})
    all_count, every = await count(users, sql, RUN_LIST, {"n": 1000})
    assert len(ten["runs"]["items"]) == 10 and len(every["runs"]["items"]) == 1000
    assert every["runs"]["items"][0]["version"]["workflow"]["owner"] == {"username": "alice"}
    assert all(len(r["nodes"]) == 3 for r in every["runs"]["items"])
    assert all_count == ten_count <= 15, sql.queries[-all_count:]


def nested(depth: int) -> str:
    inner = "name"
    for _ in range(depth):
        inner = f"latestVersion {{ workflow {{ {inner} }} }}"
    return "{ workflows { items { " + inner + " } } }"


async def test_query_depth_is_limited(users: Server) -> None:
    await users.gql(nested(4), as_="alice")
    error = await users.error(nested(6), as_="alice")
    assert "exceeds maximum operation depth" in error["message"]
    assert error["extensions"]["code"] == "BAD_REQUEST"


async def test_tokens_are_limited(users: Server) -> None:
    error = await users.error("{ me { " + "username " * 6000 + "} }", as_="alice")
    assert "tokens" in error["message"] and error["extensions"]["code"] == "BAD_REQUEST"


async def test_aliases_are_limited(users: Server) -> None:
    await users.gql("{ " + " ".join(f"a{i}: me {{ username }}" for i in range(30)) + " }", as_="alice")
    error = await users.error(
        "{ " + " ".join(f"a{i}: me {{ username }}" for i in range(31)) + " }", as_="alice"
    )
    assert "aliases" in error["message"] and error["extensions"]["code"] == "BAD_REQUEST"


async def test_batching_is_off(users: Server) -> None:
    response = await users.http.post(
        "/graphql",
        json=[{"query": "{ me { username } }"}, {"query": "{ me { username } }"}],
        headers={"Authorization": f"Bearer {users.tokens['alice']}"},
    )
    assert response.status_code == 400
    assert "batch" in response.text.lower()


async def test_unexpected_errors_are_masked_and_logged(
    users: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from aihub.graphql import runs as run_resolvers

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret database detail")

    monkeypatch.setattr(run_resolvers.queries, "list_runs", broken)
    error = await users.error("{ runs { items { id } } }", as_="alice")
    request_id = error["extensions"]["requestId"]
    assert error["message"] == f"internal error (logged on the server as request {request_id})"
    assert error["extensions"] == {"code": "INTERNAL", "requestId": request_id}
    assert "secret database detail" in caplog.text
