"""Error handling of the API (issue 22): every well-formed request gets a JSON answer; a field's failure is that
field's ``null`` plus an entry in ``errors`` with a code, and only a bug in our code is ``INTERNAL`` — with a
request id that names the traceback in the server log, never an HTTP 500 or a cancelled request."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import pytest

from aihub.services import admin, queries
from tests.graphql.harness import Server, wait_for

pytestmark = [
    pytest.mark.usefixtures("users"),
    pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True),
]

CREATE_WF = "mutation($spec: JSON!) { createWorkflow(spec: $spec) { id } }"
CREATE_RUN = "mutation($v: ID!) { createRun(versionId: $v) { id } }"
FAILING = {
    "name": "failing",
    "nodes": [
        {"name": "a", "command": "echo doomed; exit 3"},
        {"name": "b", "depends_on": ["a"], "command": "echo never"},
    ],
}
#: the "run in detail" query of docs/api.md
DETAIL = """query($id: ID!) {
  run(id: $id) {
    id name status params retryCount createdAt startedAt finishedAt message
    version { number workflow { name } } events { kind message createdAt }
    nodes {
      name status retryCount attempt inputs message exitCode startedAt finishedAt
      outputs { name type value digest size downloadUrl }
      attempts { number status exitCode message startedAt finishedAt container
                 logs(offset: 0, limit: 65536) { text nextOffset size finished } }
      events { kind message attempt createdAt }
      container
      logs(attempt: 1, offset: 0, limit: 65536) { text nextOffset size finished }
    }
    node(name: "b") { status }
  }
}"""


async def failed_run(server: Server) -> str:
    """A failed run: node ``a`` failed, ``b`` (depends on ``a``) never started."""
    version = (await server.gql(CREATE_WF, {"spec": FAILING}, as_="alice"))["createWorkflow"]["id"]
    run_id: str = (await server.gql(CREATE_RUN, {"v": version}, as_="alice"))["createRun"]["id"]
    events = await wait_for(server, run_id)
    assert events[-1]["runStatus"] == "FAILED"
    return run_id


async def send(
    server: Server,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    accept: str | None = None,
    as_: str = "alice",
) -> tuple[int, str, dict[str, Any]]:
    """(status, content type, JSON body) of one request; the body must be JSON, whatever the status."""
    headers = {"Authorization": f"Bearer {server.tokens[as_]}"}
    if accept:
        headers["Accept"] = accept
    response = await server.http.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    assert response.status_code < 500, response.text
    return response.status_code, response.headers["content-type"], response.json()


async def answer(server: Server, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    status, content_type, body = await send(server, query, variables)
    assert status == 200 and content_type.startswith("application/json"), (status, body)
    return body


def codes(body: dict[str, Any]) -> list[str]:
    return [(e.get("extensions") or {}).get("code") for e in body.get("errors") or []]


# ------------------------------------------------------------------------------------------------ bug 1


async def test_logs_of_a_never_started_node_next_to_attempts_is_a_field_error(users: Server) -> None:
    """Hazard: a ``NOT_FOUND`` on one node's ``logs`` cancelled its siblings, which awaited one shared DataLoader
    future; the CancelledError escaped GraphQL's error handling as an HTTP 500 with a plain-text body."""
    run_id = await failed_run(users)
    query = (
        "query($id: ID!) { run(id: $id) { nodes { name attempts { number } logs(attempt: 1) { size } } } }"
    )
    for _ in range(3):
        body = await answer(users, query, {"id": run_id})
        assert codes(body) == ["NOT_FOUND"], body
        assert body["errors"][0]["path"] == ["run", "nodes", 1, "logs"]
        a, b = body["data"]["run"]["nodes"]
        assert a["name"] == "a" and a["attempts"] == [{"number": 1}] and a["logs"]["size"] > 0
        assert b == {"name": "b", "attempts": [], "logs": None}


async def test_the_documented_run_detail_query_answers_for_a_failed_run(users: Server) -> None:
    """Hazard: the "run in detail" query of docs/api.md answered 500 on a failed run with a never-started node."""
    run_id = await failed_run(users)
    body = await answer(users, DETAIL, {"id": run_id})
    assert codes(body) == ["NOT_FOUND"], body  # b has no attempt 1: that field only
    assert body["errors"][0]["extensions"]["field"] == "attempt"
    run = body["data"]["run"]
    assert run["status"] == "FAILED" and run["node"] == {"status": run["nodes"][1]["status"]}
    a, b = run["nodes"]
    assert a["status"] == "FAILED" and a["exitCode"] == 3 and isinstance(a["container"], dict)
    assert a["logs"]["text"] == "doomed\n" and a["attempts"][0]["logs"]["text"] == "doomed\n"
    assert b["attempt"] == 0 and b["attempts"] == [] and b["container"] is None and b["logs"] is None


# ------------------------------------------------------------------------------------------------ bug 2


async def test_container_of_a_node_without_that_attempt_is_null(users: Server) -> None:
    """Hazard: ``NodeRun.container`` was declared non-null but returns null for a node that never started (or an
    attempt it does not have): "Cannot return null for non-nullable field" nulled the whole run as INTERNAL."""
    run_id = await failed_run(users)
    query = (
        "query($id: ID!) { run(id: $id) { nodes { name container none: container(attempt: 0) "
        "later: container(attempt: 9) executorEvents(attempt: 0) } } }"
    )
    body = await answer(users, query, {"id": run_id})
    assert "errors" not in body, body
    a, b = body["data"]["run"]["nodes"]
    assert isinstance(a["container"], dict) and a["container"]
    assert (a["none"], a["later"], a["executorEvents"]) == (None, None, [])
    assert b == {"name": "b", "container": None, "none": None, "later": None, "executorEvents": []}


# ------------------------------------------------------------------------------------------------ bug 3


@pytest.mark.parametrize("bad_id", ["²", "①", "１", "٣", "-1", "0", "+1", " 1", "1.0", "9223372036854775808"])
async def test_ids_are_ascii_digits_only(users: Server, bad_id: str) -> None:
    """Hazard: ``str.isdigit()`` took ``"²"`` and ``"①"`` (then ``int()`` failed: INTERNAL) and read ``"１"`` and
    ``"٣"`` as 1 and 3."""
    run_id = await failed_run(users)
    assert run_id == "1"  # so that "１" would find it, were it read as 1
    for query, field in (
        ("query($id: ID!) { run(id: $id) { id } }", "id"),
        ("mutation($id: ID!) { stopRun(id: $id) { id } }", "id"),
        ("mutation($id: ID!) { createRun(versionId: $id) { id } }", "versionId"),
        ("query($id: ID!) { runs(workflowId: $id) { items { id } } }", "workflowId"),
    ):
        body = await answer(users, query, {"id": bad_id})
        assert codes(body) == ["INVALID_INPUT"], body
        error = body["errors"][0]
        assert error["extensions"]["field"] == field
        assert "a positive number" in error["message"] and field in error["message"]


async def test_largest_id_is_a_plain_miss(users: Server) -> None:
    body = await answer(users, "{ run(id: 9223372036854775807) { id } }")
    assert body == {"data": {"run": None}}


# ------------------------------------------------------------------------------------------------ bug 4


def cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "raw",
    [
        "{kind}:9223372036854775808",
        "{kind}:99999999999999999999999",
        "{kind}:-1",
        "{kind}:0",
        "{kind}:²",
        "{kind}:１",
        "{kind}:",
        "other:5",
        "{kind}:5:6",
        "\udcff",
    ],
)
async def test_cursors_out_of_range_or_malformed_are_invalid_input(users: Server, raw: str) -> None:
    """Hazard: ``runs(after: "cnVuOjkyMjMzNzIwMzY4NTQ3NzU4MDg")`` (``run:2^63``) overflowed in the database
    driver: OverflowError, INTERNAL."""
    await failed_run(users)
    for kind, query in (
        ("run", "query($after: String) { runs(after: $after) { items { id } } }"),
        ("workflow", "query($after: String) { workflows(after: $after) { items { id } } }"),
    ):
        text = raw.format(kind=kind)
        value = cursor(text) if text.isprintable() and "\udcff" not in text else "%%%"
        body = await answer(users, query, {"after": value})
        assert codes(body) == ["INVALID_INPUT"], (text, body)
        assert body["errors"][0]["extensions"]["field"] == "after"
    assert cursor("run:9223372036854775808") == "cnVuOjkyMjMzNzIwMzY4NTQ3NzU4MDg"


async def test_a_valid_cursor_still_pages(users: Server) -> None:
    await failed_run(users)
    body = await answer(
        users, "query($a: String) { runs(after: $a) { items { id } } }", {"a": cursor("run:2")}
    )
    assert body == {"data": {"runs": {"items": [{"id": "1"}]}}}


# ------------------------------------------------------------------------------------ the one place


@pytest.mark.parametrize(
    "failure", [RuntimeError("secret detail"), asyncio.CancelledError()], ids=["exception", "cancelled"]
)
async def test_an_exception_in_a_resolver_is_internal_with_a_request_id(
    users: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, failure: BaseException
) -> None:
    """An exception injected into a resolver (a ``CancelledError`` too: one its task did not ask for) is that
    field's error with code INTERNAL and a request id — the traceback goes to the log under that id, nothing of
    it to the client; the other fields of the request are answered."""

    async def broken(*args: Any) -> Any:
        raise failure

    monkeypatch.setattr(queries, "get_module", broken)
    with caplog.at_level(logging.ERROR, logger="aihub.graphql"):
        response = await users.http.post(
            "/graphql",
            json={"query": "{ module(id: 1) { id } me { username } }"},
            headers={"Authorization": f"Bearer {users.tokens['alice']}"},
        )
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    body = response.json()
    request_id = response.headers["x-request-id"]
    assert body["data"] == {"module": None, "me": {"username": "alice"}}
    [error] = body["errors"]
    assert error["extensions"] == {"code": "INTERNAL", "requestId": request_id}
    assert error["path"] == ["module"] and request_id in error["message"]
    assert "secret" not in response.text
    [record] = [r for r in caplog.records if request_id in r.getMessage()]
    assert record.exc_info is not None and record.levelno == logging.ERROR
    assert "module" in record.getMessage()


async def test_a_client_request_id_is_kept(users: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken() -> list[Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr(admin, "list_teams", broken)
    headers = {"Authorization": f"Bearer {users.tokens['alice']}", "X-Request-ID": "trace-42"}
    response = await users.http.post("/graphql", json={"query": "{ teams { id } }"}, headers=headers)
    assert response.headers["x-request-id"] == "trace-42"
    assert response.json()["errors"][0]["extensions"] == {"code": "INTERNAL", "requestId": "trace-42"}
    headers["X-Request-ID"] = "not;a;token" * 10  # not echoed: a fresh id instead
    response = await users.http.post("/graphql", json={"query": "{ me { id } }"}, headers=headers)
    assert response.headers["x-request-id"] != headers["X-Request-ID"] and response.headers["x-request-id"]


# ------------------------------------------------------------------------------------------ media types

GRAPHQL_RESPONSE = "application/graphql-response+json"


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("{ me { id }", {}),  # syntax
        ("{ me { nope } }", {}),  # validation
        ("query($id: ID!) { run(id: $id) { id } }", {}),  # a required variable is missing
        ("query($n: Int!) { runs(first: $n) { items { id } } }", {"n": "many"}),  # does not coerce
    ],
    ids=["syntax", "validation", "missing-variable", "variable-type"],
)
async def test_request_errors_are_400_for_graphql_response_json(
    users: Server, query: str, variables: dict[str, Any]
) -> None:
    status, content_type, body = await send(users, query, variables, accept=GRAPHQL_RESPONSE)
    assert status == 400 and content_type.startswith(GRAPHQL_RESPONSE), body
    assert "data" not in body and codes(body) and set(codes(body)) == {"BAD_REQUEST"}
    # application/json (or no preference) keeps 200 for the same request
    for accept in (None, "application/json", "*/*", f"{GRAPHQL_RESPONSE};q=0.5, application/json"):
        status, content_type, body = await send(users, query, variables, accept=accept)
        assert status == 200 and content_type.startswith("application/json"), (accept, body)
        assert codes(body) == ["BAD_REQUEST"] * len(body["errors"])


async def test_field_errors_stay_200_for_graphql_response_json(users: Server) -> None:
    accept = f"{GRAPHQL_RESPONSE}, application/json;q=0.9"
    status, content_type, body = await send(users, '{ run(id: "x") { id } me { username } }', accept=accept)
    assert status == 200 and content_type.startswith(GRAPHQL_RESPONSE)
    assert codes(body) == ["INVALID_INPUT"] and body["data"] == {"run": None, "me": {"username": "alice"}}
    status, _, body = await send(users, "{ me { username } }", accept=accept)
    assert status == 200 and body == {"data": {"me": {"username": "alice"}}}


# --------------------------------------------------------------------------- found by the fuzzer


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ('{ runs(owner: "%s") { items { id } } }' % ("o" * 65), "username"),
        ('{ workflows(owner: "%s") { items { id } } }' % ("o" * 65), "username"),
        ('{ modules(category: "%s") { id } }' % ("c" * 65), "name"),
        ('mutation { login(username: "%s", password: "p") { token } }' % ("u" * 65), "username"),
    ],
)
async def test_values_longer_than_their_column_are_invalid_input(
    users: Server, query: str, field: str
) -> None:
    """Hazard (found by ``test_fuzz_api``): a filter longer than its column (65 characters for a 64-character
    username) made the database layer raise ValidationError: INTERNAL."""
    status, _, body = await send(users, query)
    assert status == 200 and codes(body) == ["INVALID_INPUT"], body["errors"]
    assert body["errors"][0]["extensions"]["field"] == field


@pytest.mark.parametrize(
    ("mutation", "field"),
    [
        (
            'mutation { createVirtualCluster(input: {name: "c", nodeSelector: ["gpu"]}) { id } }',
            "nodeSelector",
        ),
        ('mutation { createVirtualCluster(input: {name: "c", nodeSelector: "gpu"}) { id } }', "nodeSelector"),
        ('mutation { createDataStorage(input: {name: "s", path: "/data/s", volume: [1]}) { id } }', "volume"),
    ],
)
async def test_json_inputs_that_must_be_objects(users: Server, mutation: str, field: str) -> None:
    """Hazard (found by ``test_fuzz_api``): a ``nodeSelector`` given as a list raised AttributeError: INTERNAL."""
    status, _, body = await send(users, mutation, as_="admin")
    assert status == 200 and codes(body) == ["INVALID_INPUT"], body["errors"]
    assert body["errors"][0]["extensions"]["field"] == field
    cluster = (await users.gql('mutation { createVirtualCluster(input: {name: "c2"}) { id } }', as_="admin"))[
        "createVirtualCluster"
    ]["id"]
    update = "mutation($id: ID!) { updateVirtualCluster(id: $id, input: {nodeSelector: [1]}) { id } }"
    status, _, body = await send(users, update, {"id": cluster}, as_="admin")
    assert codes(body) == ["INVALID_INPUT"] and body["errors"][0]["extensions"]["field"] == "nodeSelector"
