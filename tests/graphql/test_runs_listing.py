"""``runs``: newest first, filters by status, workflow and owner, cursor pagination, input errors."""

from __future__ import annotations

from typing import Any

import pytest

from tests.graphql.harness import Server

pytestmark = pytest.mark.usefixtures("users")

RUNS = """query($status: [RunStatus!], $wf: ID, $owner: String, $first: Int!, $after: String) {
  runs(status: $status, workflowId: $wf, owner: $owner, first: $first, after: $after) {
    items { name status owner { username } workflow { name } } nextCursor } }"""


@pytest.fixture
def app_options() -> dict[str, Any]:
    return {"run_engine": False}


async def make_runs(users: Server) -> dict[str, str]:
    """alice: 3 runs of "one" (one stopped) and 2 of "two"; admin: 1 run of "three"."""
    workflows = {}
    for name, who, count in (("one", "alice", 3), ("two", "alice", 2), ("three", "admin", 1)):
        spec = {"name": name, "nodes": [{"name": "a", "command": "true"}]}
        version = (
            await users.gql(
                "mutation($s: JSON!) { createWorkflow(spec: $s) { id workflow { id } } }",
                {"s": spec},
                as_=who,
            )
        )["createWorkflow"]
        workflows[name] = version["workflow"]["id"]
        for i in range(count):
            run = (
                await users.gql(
                    "mutation($v: ID!, $n: String) { createRun(versionId: $v, name: $n) { id } }",
                    {"v": version["id"], "n": f"{name}-{i}"},
                    as_=who,
                )
            )["createRun"]
            if name == "one" and i == 1:
                await users.gql("mutation($id: ID!) { stopRun(id: $id) { id } }", {"id": run["id"]}, as_=who)
    return workflows


async def names(users: Server, who: str = "alice", **variables: Any) -> list[str]:
    variables.setdefault("first", 50)
    data = await users.gql(RUNS, variables, as_=who)
    return [r["name"] for r in data["runs"]["items"]]


async def test_filters(users: Server) -> None:
    workflows = await make_runs(users)
    assert await names(users) == ["two-1", "two-0", "one-2", "one-1", "one-0"]
    assert await names(users, "admin") == ["three-0", "two-1", "two-0", "one-2", "one-1", "one-0"]
    assert await names(users, status=["STOPPED"]) == ["one-1"]
    assert await names(users, status=["PENDING", "STOPPED"], wf=workflows["one"]) == [
        "one-2",
        "one-1",
        "one-0",
    ]
    assert await names(users, wf=workflows["two"]) == ["two-1", "two-0"]
    assert await names(users, "admin", owner="admin") == ["three-0"]
    assert await names(users, owner="admin") == []  # filters narrow what the caller may see
    assert await names(users, wf=workflows["three"]) == []


async def test_cursor_pagination(users: Server) -> None:
    await make_runs(users)
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        data = (await users.gql(RUNS, {"first": 2, "after": after}, as_="admin"))["runs"]
        seen += [r["name"] for r in data["items"]]
        pages += 1
        after = data["nextCursor"]
        if after is None:
            break
    assert pages == 3 and seen == ["three-0", "two-1", "two-0", "one-2", "one-1", "one-0"]
    # a cursor stays valid when newer runs arrive
    first = (await users.gql(RUNS, {"first": 2}, as_="admin"))["runs"]
    version = await users.gql("{ workflows(first: 1) { items { latestVersion { id } } } }", as_="admin")
    await users.gql(
        "mutation($v: ID!) { createRun(versionId: $v) { id } }",
        {"v": version["workflows"]["items"][0]["latestVersion"]["id"]},
        as_="admin",
    )
    assert await names(users, "admin", first=2, after=first["nextCursor"]) == ["two-0", "one-2"]


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"first": 0}, "first"),
        ({"first": 1001}, "first"),
        ({"first": 5, "after": "bm90LWEtY3Vyc29y"}, "after"),
        ({"first": 5, "owner": "nobody"}, "owner"),
        ({"first": 5, "wf": "x"}, "workflowId"),
    ],
)
async def test_input_errors(users: Server, variables: dict[str, Any], field: str) -> None:
    error = await users.error(RUNS, variables, as_="alice")
    assert error["extensions"] == {"code": "INVALID_INPUT", "field": field}
