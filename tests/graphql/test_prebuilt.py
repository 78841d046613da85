"""The hand-built node list and live events (``aihub.graphql.prebuilt``) answers exactly what graphql-core's general execution
answers: the same query text gives the same JSON with the fast path on and off, for a run with every kind of
field (null and set timestamps, exit codes, JSON inputs, text and path outputs, several attempts, run-level and
node events, a cache source), with aliases and ``__typename``; selections it cannot answer take the general
path. A live event is built once for all the subscribers of a selection and sent as the same text as the
general path's."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from aihub.bus.base import RunEvent
from aihub.db.models import Attempt, NodeEvent, NodeRun, Run
from aihub.domain.status import NodeStatus, RunStatus
from aihub.graphql import prebuilt
from aihub.services.runs import create_run
from aihub.services.workflows import create_workflow
from tests.graphql.harness import Server, WsClient

pytestmark = pytest.mark.usefixtures("users")

EVERY_FIELD = """query($id: ID!) { run(id: $id) { id status
  nodes { __typename name status retryCount attempt inputs message exitCode startedAt finishedAt cacheSourceId
    outputs { __typename name type value digest size downloadUrl }
    attempts { number status executor exitCode message startedAt finishedAt }
    events { node attempt kind message createdAt } }
} }"""
ALIASES = """query($id: ID!) { run(id: $id) {
  first: nodes { n: name s: status outs: outputs { v: value t: __typename } tries: attempts { number } }
  nodes { name events { kind } }
} }"""
#: not plain: a fragment, a directive, a field with arguments, a resolver outside the extras
GENERAL = [
    "query($id: ID!) { run(id: $id) { nodes { ...N } } } fragment N on NodeRun { name status }",
    "query($id: ID!) { run(id: $id) { nodes { name status @include(if: true) } } }",
    "query($id: ID!) { run(id: $id) { nodes { name logs(limit: 10) { text } } } }",
    "query($id: ID!) { run(id: $id) { nodes { name attempts { number container } } } }",
    "query($id: ID!) { run(id: $id) { nodes { name } nodes { status } } }",
]


@pytest.fixture
def app_options() -> dict[str, Any]:
    return {"run_engine": False}


async def every_kind_of_run(server: Server) -> Run:
    spec = {
        "name": "kinds",
        "nodes": [
            {
                "name": "a",
                "command": "true",
                "outputs": [
                    {"name": "t", "path": "/tmp/workflow_space/t", "type": "text"},
                    {"name": "p", "path": "/tmp/workflow_space/p", "type": "path"},
                ],
            },
            {"name": "b", "command": "true", "inputs": [{"name": "x", "from": "a.t"}]},
            {"name": "c", "command": "true", "depends_on": ["b"]},
        ],
    }
    alice = server.users["alice"]
    version = await create_workflow(alice, spec)
    run = await create_run(server.rt.bus, alice, version.id)
    source = await create_run(server.rt.bus, alice, version.id)
    nodes = {n.name: n for n in await NodeRun.filter(run_id=run.id)}
    when = datetime(2026, 12, 5, 10, 30, 1, 123456, tzinfo=UTC)
    a, b = nodes["a"], nodes["b"]
    a.status, a.attempt, a.retry_count, a.exit_code, a.message = NodeStatus.SUCCEEDED, 2, 1, 0, "exited ü"
    a.started_at, a.finished_at = when, when
    a.outputs = {
        "t": {"type": "text", "value": 'héllo "q"', "digest": None, "size": 7},
        "p": {"type": "path", "value": "/tmp/workflow_space/p", "digest": "sha256:ab", "size": 1234},
    }
    a.cache_source_id = (await NodeRun.filter(run_id=source.id, name="a").first()).id  # type: ignore[union-attr]
    b.status, b.attempt, b.inputs = NodeStatus.FAILED, 1, {"x": "héllo", "n": [1, 2.5, None, {"k": True}]}
    await a.save()
    await b.save()
    await Attempt.bulk_create(
        [
            Attempt(node_run_id=a.id, number=1, status=NodeStatus.FAILED, exit_code=3, message="boom"),
            Attempt(node_run_id=a.id, number=2, status=NodeStatus.SUCCEEDED, exit_code=0, started_at=when),
            Attempt(node_run_id=b.id, number=1, status=NodeStatus.FAILED, exit_code=None, message="lost"),
        ]
    )
    await NodeEvent.bulk_create(
        [
            NodeEvent(run_id=run.id, node=None, attempt=None, kind="run_started", message=""),
            NodeEvent(run_id=run.id, node="a", attempt=1, kind="started", message="go"),
            NodeEvent(run_id=run.id, node="b", attempt=None, kind="skipped", message="x"),
        ]
    )
    await Run.filter(id=run.id).update(status=RunStatus.FAILED)
    return run


async def both_answers(
    server: Server, query: str, variables: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> tuple[str, str, int]:
    """The response bodies with the fast path on and off, and how many nodes it built while on."""
    built = 0
    original = prebuilt.Plan.build

    def counting(self: prebuilt.Plan, obj: Any, data: Any = None) -> prebuilt.Completed:
        nonlocal built
        built += 1
        return original(self, obj, data)

    monkeypatch.setattr(prebuilt.Plan, "build", counting)
    headers = {"Authorization": f"Bearer {server.tokens['alice']}"}
    payload = {"query": query, "variables": variables}
    fast = (await server.http.post("/graphql", json=payload, headers=headers)).text
    monkeypatch.setattr(prebuilt, "ENABLED", False)
    general = (await server.http.post("/graphql", json=payload, headers=headers)).text
    monkeypatch.setattr(prebuilt, "ENABLED", True)
    return fast, general, built


async def test_every_field_kind_gives_the_same_json(users: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    run = await every_kind_of_run(users)
    fast, general, built = await both_answers(users, EVERY_FIELD, {"id": run.id}, monkeypatch)
    assert built >= 3, "the node list did not take the fast path"
    assert '"errors"' not in general, general
    assert fast == general and '"errors"' not in fast, fast
    node_a = next(n for n in json.loads(fast)["data"]["run"]["nodes"] if n["name"] == "a")
    outputs = {o["name"]: o for o in node_a["outputs"]}  # PostgreSQL's jsonb keeps its own key order
    assert outputs["p"]["downloadUrl"].endswith("/nodes/a/outputs/p") and outputs["t"]["downloadUrl"] is None
    assert node_a["startedAt"] == "2026-12-05T10:30:01.123456+00:00"


async def test_aliases_and_typename_give_the_same_json(
    users: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = await every_kind_of_run(users)
    fast, general, built = await both_answers(users, ALIASES, {"id": run.id}, monkeypatch)
    assert built >= 6 and fast == general and '"errors"' not in fast, fast


@pytest.mark.parametrize("query", GENERAL)
async def test_selections_it_cannot_answer_take_the_general_path(
    users: Server, monkeypatch: pytest.MonkeyPatch, query: str
) -> None:
    run = await every_kind_of_run(users)
    fast, general, built = await both_answers(users, query, {"id": run.id}, monkeypatch)
    assert built == 0
    assert fast == general and '"errors"' not in fast, fast


# ------------------------------------------------------------------------------------------------ live events

LIVE = "subscription($id: ID!) { runEvents(runId: $id) { __typename runId runStatus node s: nodeStatus retryCount attempt message snapshot } }"


async def raw_messages(ws: WsClient, count: int) -> list[str]:
    assert ws.conn is not None
    return [str(await asyncio.wait_for(ws.conn.recv(), 30)) for _ in range(count)]


async def test_live_events_are_built_once_per_selection_with_the_same_text(
    users: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = await every_kind_of_run(users)
    builds: list[prebuilt.Plan] = []
    original = prebuilt.Plan.build

    def counting(self: prebuilt.Plan, obj: Any, data: Any = None) -> prebuilt.Completed:
        builds.append(self)
        return original(self, obj, data)

    monkeypatch.setattr(prebuilt.Plan, "build", counting)
    token = users.tokens["alice"]
    variables = {"id": str(run.id)}
    async with users.ws(token) as fast1, users.ws(token) as fast2, users.ws(token) as general:
        for ws in (fast1, fast2):
            await ws.subscribe(LIVE, variables)
            await raw_messages(ws, 4)  # the snapshot: the run and its three nodes
        monkeypatch.setattr(prebuilt, "ENABLED", False)
        await general.subscribe(LIVE, variables)
        await raw_messages(general, 4)
        monkeypatch.setattr(prebuilt, "ENABLED", True)
        builds.clear()
        # built answers are kept per event's value: a message unique to this test
        tag = uuid.uuid4().hex
        events = [
            RunEvent(run.id, "RUNNING", "a", "RUNNING", 0, 1, f'started "ü" {tag}'),
            RunEvent(run.id, "RUNNING", "b", "FAILED", 2, None, tag),
            RunEvent(run.id, "FAILED", None, None, 0, None, tag),
        ]
        for event in events:
            await users.rt.bus.publish(event)
        texts = [await raw_messages(ws, len(events)) for ws in (fast1, fast2, general)]
    assert texts[0] == texts[1] == texts[2]
    assert json.loads(texts[0][0])["payload"]["data"]["runEvents"]["s"] == "RUNNING"
    assert len(builds) == len(events), "each live event is built once for both fast subscribers"


@pytest.mark.parametrize(
    "message",
    [
        {"id": 'op-"1"', "type": "next", "payload": {"data": {"runEvents": prebuilt.Completed(a=1, b="é")}}},
        {"id": "1", "type": "next", "payload": {"data": {"runEvents": {"a": 1}}}},
        {"id": "1", "type": "next", "payload": {"data": {"x": prebuilt.Completed(a=1)}, "errors": []}},
        {"id": "1", "type": "complete"},
    ],
)
def test_next_message_text_is_what_json_dumps_gives(message: dict[str, Any]) -> None:
    text = prebuilt.next_message_text(message)
    built = isinstance(message.get("payload", {}).get("data", {}).get("runEvents"), prebuilt.Completed)
    assert (text is not None) == built
    if text is not None:
        assert text == json.dumps(message, separators=(",", ":"))
