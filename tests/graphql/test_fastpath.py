"""The precompiled path of simple documents (``aihub.graphql.fastpath``) answers exactly what the generic path
answers: for many documents, callers and variables, the HTTP status, the headers and the body bytes are the same
with the path on and off, and the path is taken where it should be (and only there). Also: the same operation
metric is counted, the side connection reads of SQLite (``aihub.db.prepared``) and the reader connections of
PostgreSQL (``aihub.db.pg_reads``) give the same answers, and the limits (cost, depth, aliases, tokens) keep a
document off the path when they would refuse it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from aihub.db import pg_reads, prepared
from aihub.db.models import Run, TokenKind
from aihub.db.pg import ResilientAsyncpgClient
from aihub.graphql import fastpath
from aihub.graphql.context import Context
from aihub.graphql.schema import build_schema
from aihub.services.runs import create_run
from aihub.services.tokens import issue_token
from aihub.services.workflows import create_workflow
from tests.graphql.harness import Server

STATUS = "query($id: ID!) { run(id: $id) { status } }"
EVERY_SCALAR = """query($id: ID!) { run(id: $id) {
  __typename id name status params retryCount message useCache createdAt startedAt finishedAt copiedFromId } }"""


@pytest.fixture
def app_options() -> dict[str, Any]:
    return {"run_engine": False}


async def runs_of(server: Server) -> dict[str, int]:
    """alice's run (and a copy of it, with copiedFromId), and carol's run (which alice may not see)."""
    spec = {"name": "fp", "nodes": [{"name": "a", "command": "true"}]}
    alice, carol = server.users["alice"], server.users["carol"]
    version = await create_workflow(alice, spec)
    mine = await create_run(server.rt.bus, alice, version.id)
    await Run.filter(id=mine.id).update(params={"x": [1, "ü", None]})
    copy = await create_run(server.rt.bus, alice, version.id, copied_from=mine.id)
    other = await create_run(server.rt.bus, carol, (await create_workflow(carol, spec)).id)
    return {"mine": mine.id, "copy": copy.id, "other": other.id}


def view_of(server: Server) -> Any:
    for route in server.app.routes:
        if getattr(route, "path", None) == "/graphql" and hasattr(route, "methods"):
            return route.app
    raise AssertionError("no /graphql route")


async def respond(server: Server, payload: Any, headers: dict[str, str]) -> tuple[int, list[Any], bytes]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    response = await server.http.post(
        "/graphql",
        content=body,
        headers={"content-type": "application/json", "x-request-id": "fixed-id", **headers},
    )
    kept = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in ("date", "server")]
    return response.status_code, kept, response.content


async def both_paths(
    server: Server, payload: Any, headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> tuple[tuple[int, list[Any], bytes], tuple[int, list[Any], bytes], int]:
    """(fast path on, off) responses and how many requests the fast path answered while on."""
    fast = view_of(server).fast_queries
    before = fast.answered
    on = await respond(server, payload, headers)
    taken = fast.answered - before
    monkeypatch.setattr(fastpath, "ENABLED", False)
    off = await respond(server, payload, headers)
    monkeypatch.setattr(fastpath, "ENABLED", True)
    assert fast.answered - before == taken
    return on, off, taken


def cases(ids: dict[str, int]) -> list[tuple[str, Any, bool]]:
    """(caller, request body, taken by the fast path)"""
    mine, other, copy = ids["mine"], ids["other"], ids["copy"]
    q = {"query": STATUS}
    return [
        # answered on the fast path: visible, invisible and missing runs alike, ids as strings and numbers
        ("alice", {**q, "variables": {"id": str(mine)}}, True),
        ("alice", {**q, "variables": {"id": mine}}, True),
        ("alice", {**q, "variables": {"id": float(mine)}}, True),
        ("alice", {**q, "variables": {"id": str(other)}}, True),
        ("alice", {**q, "variables": {"id": "987654"}}, True),
        ("carol", {**q, "variables": {"id": str(other)}}, True),
        ("bob", {**q, "variables": {"id": str(mine)}}, True),
        ("admin", {**q, "variables": {"id": str(other)}}, True),
        ("alice", {**q, "variables": {"id": str(mine), "extra": [1, 2]}}, True),
        ("alice", {**q, "variables": {"id": str(mine)}, "operationName": None}, True),
        ("alice", {"query": EVERY_SCALAR, "variables": {"id": str(mine)}}, True),
        ("alice", {"query": EVERY_SCALAR, "variables": {"id": str(copy)}}, True),
        ("alice", {"query": EVERY_SCALAR, "variables": {"id": str(other)}}, True),
        ("alice", {"query": f'{{ run(id: "{mine}") {{ status name }} }}'}, True),
        ("alice", {"query": f"{{ run(id: {mine}) {{ status }} }}"}, True),
        ("alice", {"query": f"query {{ r: run(id: {mine}) {{ s: status t: __typename i: id }} }}"}, True),
        (
            "alice",
            {"query": "query Poll($r: ID!) { run(id: $r) { status } }", "variables": {"r": mine}},
            True,
        ),
        (
            "alice",
            {
                "query": "query Poll($r: ID!) { run(id: $r) { status } }",
                "variables": {"r": mine},
                "operationName": "Poll",
            },
            True,
        ),
        # the generic path: errors, bad ids and variables, callers without a valid token
        ("alice", {**q, "variables": {"id": "abc"}}, False),
        ("alice", {**q, "variables": {"id": "-1"}}, False),
        ("alice", {**q, "variables": {}}, False),
        ("alice", {**q}, False),
        ("alice", {**q, "variables": {"id": None}}, False),
        ("alice", {**q, "variables": {"id": True}}, False),
        ("alice", {**q, "variables": {"id": 1.5}}, False),
        ("alice", {**q, "variables": {"id": [mine]}}, False),
        ("alice", {**q, "variables": {"id": {"x": 1}}}, False),
        ("alice", {**q, "variables": [mine]}, False),
        ("alice", {**q, "variables": {"id": str(mine)}, "operationName": "Other"}, False),
        ("alice", {**q, "variables": {"id": str(mine)}, "operationName": 5}, False),
        ("alice", {**q, "variables": {"id": str(mine)}, "extensions": {"x": 1}}, False),
        ("alice", {**q, "variables": {"id": str(mine)}, "unknownKey": 1}, False),
        ("alice", [{**q, "variables": {"id": str(mine)}}], False),
        ("alice", b"{not json", False),
        ("alice", {"query": 5}, False),
        ("alice", {"query": ""}, False),
        (None, {**q, "variables": {"id": str(mine)}}, False),
        ("bad token", {**q, "variables": {"id": str(mine)}}, False),
        # the generic path: documents that are not simple, or not valid
        ("alice", {"query": "query($id: ID) { run(id: $id) { status } }", "variables": {"id": mine}}, False),
        (
            "alice",
            {"query": 'query($id: ID! = "1") { run(id: $id) { status } }', "variables": {"id": mine}},
            False,
        ),
        ("alice", {"query": "query($id: ID!) { run(id: $id) { ...F } } fragment F on Run { status }"}, False),
        (
            "alice",
            {"query": STATUS.replace("{ status }", "{ ... on Run { status } }"), "variables": {"id": mine}},
            False,
        ),
        (
            "alice",
            {"query": STATUS.replace("status", "status @include(if: true)"), "variables": {"id": mine}},
            False,
        ),
        (
            "alice",
            {
                "query": STATUS.replace("run(id: $id)", "run(id: $id) @skip(if: false)"),
                "variables": {"id": mine},
            },
            False,
        ),
        (
            "alice",
            {"query": STATUS.replace("{ status }", "{ status status }"), "variables": {"id": mine}},
            False,
        ),
        (
            "alice",
            {"query": STATUS.replace("{ status }", "{ version { number } }"), "variables": {"id": mine}},
            False,
        ),
        (
            "alice",
            {"query": STATUS.replace("{ status }", "{ nodes { name } }"), "variables": {"id": mine}},
            False,
        ),
        ("alice", {"query": STATUS.replace("{ status }", "{ nope }"), "variables": {"id": mine}}, False),
        ("alice", {"query": STATUS.replace("{ status }", ""), "variables": {"id": mine}}, False),
        ("alice", {"query": STATUS[:-2], "variables": {"id": mine}}, False),
        (
            "alice",
            {
                "query": "query($id: ID!) { run(id: $id) { status } me { username } }",
                "variables": {"id": mine},
            },
            False,
        ),
        (
            "alice",
            {"query": "query($id: ID!, $x: Int) { run(id: $id) { status } }", "variables": {"id": mine}},
            False,
        ),
        ("alice", {"query": "{ __typename }"}, False),
        ("alice", {"query": STATUS + " " * fastpath.MAX_SIMPLE_CHARS, "variables": {"id": mine}}, False),
        ("alice", {"query": f'mutation {{ stopRun(id: "{other}") {{ status }} }}'}, False),
        ("alice", {"query": f'{{ run(id: "{mine}") {{ status }} }} {{ __typename }}'}, False),
    ]


async def test_both_paths_answer_the_same_bytes(users: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = await runs_of(users)
    for caller, payload, taken in cases(ids):
        for accept in (None, "application/graphql-response+json"):
            headers = {"accept": accept} if accept else {}
            if caller == "bad token":
                headers["authorization"] = "Bearer not-a-token"
            elif caller is not None:
                headers["authorization"] = f"Bearer {users.tokens[caller]}"
            on, off, answered = await both_paths(users, payload, headers, monkeypatch)
            assert on == off, (caller, payload, accept)
            assert answered == (1 if taken else 0), (caller, payload, accept, on)


async def test_an_invisible_run_is_a_missing_one(users: Server) -> None:
    ids = await runs_of(users)
    headers = {"authorization": f"Bearer {users.tokens['alice']}"}
    invisible = await respond(users, {"query": STATUS, "variables": {"id": ids["other"]}}, headers)
    missing = await respond(users, {"query": STATUS, "variables": {"id": 987654}}, headers)
    assert invisible == missing
    assert json.loads(invisible[2]) == {"data": {"run": None}}
    mine = await respond(users, {"query": STATUS, "variables": {"id": ids["mine"]}}, headers)
    assert json.loads(mine[2]) == {"data": {"run": {"status": "PENDING"}}}


async def test_run_tokens_on_both_paths(users: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = await runs_of(users)
    token, _ = await issue_token(users.users["alice"].id, TokenKind.RUN, run_id=ids["mine"])
    headers = {"authorization": f"Bearer {token}"}
    own = {"query": STATUS, "variables": {"id": ids["mine"]}}
    on, off, answered = await both_paths(users, own, headers, monkeypatch)
    assert on == off and answered == 1
    assert json.loads(on[2]) == {"data": {"run": {"status": "PENDING"}}}
    for run_id in (ids["copy"], ids["other"], 987654):
        on, off, answered = await both_paths(
            users, {"query": STATUS, "variables": {"id": run_id}}, headers, monkeypatch
        )
        assert on == off and answered == 0
        assert json.loads(on[2])["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_the_operation_is_counted_as_on_the_generic_path(
    users: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await runs_of(users)
    metrics = users.app.state.metrics
    headers = {"authorization": f"Bearer {users.tokens['alice']}"}
    for query, label in ((STATUS, None), ("query Poll($id: ID!) { run(id: $id) { status } }", "Poll")):
        counter = metrics.graphql.labels("query", metrics.operation_label(label))
        before = counter._value.get()
        await both_paths(users, {"query": query, "variables": {"id": ids["mine"]}}, headers, monkeypatch)
        assert counter._value.get() == before + 2


def side_reads() -> int:
    """Reads answered by SQLite's side connection or PostgreSQL's readers (``aihub.db.pg_reads``)."""
    db = Run._meta.db
    if isinstance(db, ResilientAsyncpgClient):
        return db.readers.reads if db.readers else 0
    return prepared.side_readers.reads


async def test_side_reads_give_the_same_answers(users: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = await runs_of(users)
    await Run.filter(id=ids["mine"]).update(message="side ü")
    headers = {"authorization": f"Bearer {users.tokens['alice']}"}
    payload = {"query": EVERY_SCALAR, "variables": {"id": ids["mine"]}}
    before = side_reads()
    side = await respond(users, payload, headers)
    assert side_reads() - before == 1
    monkeypatch.setattr(prepared.side_readers, "enabled", False)
    monkeypatch.setattr(pg_reads, "ENABLED", False)
    assert await respond(users, payload, headers) == side
    assert side_reads() - before == 1
    assert json.loads(side[2])["data"]["run"]["message"] == "side ü"


@pytest.mark.parametrize(
    "limits",
    [
        {},
        {"max_depth": 0},
        {"max_depth": 1},
        {"max_cost": 1},
        {"max_cost": 3},
        {"max_aliases": 1},
        {"max_aliases": 2},
        {"max_tokens": 10},
    ],
)
async def test_limits_keep_documents_off_the_path(limits: dict[str, int]) -> None:
    """A document is planned exactly when the generic path's limits let it run (its resolver is reached: an
    anonymous caller's UNAUTHENTICATED), and refused by them otherwise."""
    simple = "query($id: ID!) { run(id: $id) { a: status b: id } }"
    schema = build_schema(**limits)
    result = await schema.execute(
        simple, variable_values={"id": "1"}, context_value=Context(None, None, None)
    )  # type: ignore[arg-type]
    codes = {e.extensions["code"] for e in result.errors or ()}
    planned = schema.fast_queries.plan_for(simple) is not None  # type: ignore[attr-defined]
    assert codes == ({"UNAUTHENTICATED"} if planned else codes & {"BAD_REQUEST", "QUERY_TOO_COSTLY"}), codes
    assert codes
    assert planned == (limits in ({}, {"max_depth": 1}, {"max_cost": 3}, {"max_aliases": 2}))
