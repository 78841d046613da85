"""Runs through the API with the real engine and real local processes: the seed example end to end, node
details (outputs with downloads, attempts, logs by offset, container view, events), stop, retry, retry from a
node, copy with overrides, the run-scoped ``AI_HUB_TOKEN``, and the input errors of each mutation."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.graphql.harness import Server, wait_for

pytestmark = pytest.mark.usefixtures("users")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SEED = (EXAMPLES / "pass-params-demo.yaml").read_text()

CREATE_WF = "mutation($spec: JSON!) { createWorkflow(spec: $spec) { id } }"
CREATE_RUN = (
    "mutation($v: ID!, $params: JSON, $name: String) { createRun(versionId: $v, params: $params, name: $name)"
    " { id name status params } }"
)
NODE_LOGS = "subscription($id: ID!, $node: String!, $a: Int) { nodeLogs(runId: $id, node: $node, attempt: $a) { text } }"
DETAIL = """query($id: ID!) { run(id: $id) {
  id name status params retryCount createdAt startedAt finishedAt message
  version { number workflow { name } }
  nodes { name status retryCount attempt inputs message exitCode startedAt finishedAt
    outputs { name type value digest size downloadUrl }
    attempts { number status exitCode startedAt finishedAt container logs { text size finished } }
    events { kind message attempt }
    container
  }
  events { kind message }
} }"""


async def start(server: Server, spec: Any, params: dict[str, Any] | None = None, who: str = "alice") -> str:
    version = (await server.gql(CREATE_WF, {"spec": spec}, as_=who))["createWorkflow"]["id"]
    run = (await server.gql(CREATE_RUN, {"v": version, "params": params}, as_=who))["createRun"]
    return run["id"]  # type: ignore[no-any-return]


async def node_log_lines(server: Server, run_id: str, node: str, attempt: int | None = None) -> list[str]:
    async with server.ws(server.tokens["alice"]) as ws:
        op = await ws.subscribe(NODE_LOGS, {"id": run_id, "node": node, "a": attempt})
        return [data["nodeLogs"]["text"] async for data in ws.results(op)]


async def test_seed_example_end_to_end(users: Server) -> None:
    run_id = await start(users, SEED, {"greeting": "hi"})
    events = await wait_for(users, run_id)
    assert events[-1]["runStatus"] == "SUCCEEDED"
    assert await node_log_lines(users, run_id, "step2") == [
        "outparam1",
        "/tmp/outparam2.txt",
        "/tmp/outparam3",
        "outparam2",
        "file1",
    ]
    run = (await users.gql(DETAIL, {"id": run_id}, as_="alice"))["run"]
    assert run["status"] == "SUCCEEDED" and run["params"] == {"greeting": "hi"}
    assert run["version"] == {"number": 1, "workflow": {"name": "pass-params-demo"}}
    assert run["startedAt"] and run["finishedAt"]
    step1, step2 = run["nodes"]
    assert step1["name"] == "step1" and step1["status"] == "SUCCEEDED" and step1["exitCode"] == 0
    outputs = {o["name"]: o for o in step1["outputs"]}
    text = outputs["output_param1"]
    assert (text["type"], text["value"], text["digest"], text["downloadUrl"]) == (
        "text",
        "outparam1",
        None,
        None,
    )
    assert outputs["output_param3"]["downloadUrl"] == f"/api/runs/{run_id}/nodes/step1/outputs/output_param3"
    assert step2["inputs"]["msg"] == "hi" and step2["inputs"]["step1param2"] == "/tmp/outparam2.txt"
    assert [a["number"] for a in step2["attempts"]] == [1]
    attempt = step2["attempts"][0]
    assert attempt["status"] == "SUCCEEDED" and attempt["exitCode"] == 0
    log = "outparam1\n/tmp/outparam2.txt\n/tmp/outparam3\noutparam2\nfile1\n"
    assert attempt["logs"] == {"text": log, "size": len(log), "finished": True}
    assert isinstance(attempt["container"], dict) and attempt["container"]
    assert step2["container"] == attempt["container"]
    kinds = [e["kind"] for e in step1["events"]]
    assert "started" in kinds and "exited" in kinds and "output_stored" in kinds
    assert [e["kind"] for e in run["events"]] == ["run_running", "run_succeeded"]

    # the directory output downloads as its archive, for those who may see the run
    url = outputs["output_param3"]["downloadUrl"]
    response = await users.http.get(url, headers={"Authorization": f"Bearer {users.tokens['alice']}"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        assert any(name.endswith("file1") for name in tar.getnames())
    response = await users.http.get(url, headers={"Authorization": f"Bearer {users.tokens['carol']}"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "NOT_FOUND"
    response = await users.http.get(url)
    assert response.status_code == 401
    response = await users.http.get(
        url.replace("output_param3", "output_param1"),
        headers={"Authorization": f"Bearer {users.tokens['alice']}"},
    )
    assert response.status_code == 404  # a text output has nothing to download


LOG_CHUNK = (
    "query($id: ID!, $node: String!, $a: Int, $o: Int!, $l: Int!) { run(id: $id) { node(name: $node) {"
    " logs(attempt: $a, offset: $o, limit: $l) { attempt text offset nextOffset size finished } } } }"
)


async def test_logs_by_offset_never_split_a_character(users: Server) -> None:
    command = 'i=0; while [ $i -lt 300 ]; do echo "ligne $i: é😀"; i=$((i+1)); done'
    run_id = await start(users, {"name": "talk", "nodes": [{"name": "a", "command": command}]})
    await wait_for(users, run_id)
    text, offset, chunks = "", 0, 0
    while True:
        chunk = (await users.gql(LOG_CHUNK, {"id": run_id, "node": "a", "o": offset, "l": 333}, as_="alice"))[
            "run"
        ]["node"]["logs"]
        assert chunk["offset"] == offset and chunk["attempt"] == 1
        assert "\ufffd" not in chunk["text"]
        text += chunk["text"]
        offset = chunk["nextOffset"]
        chunks += 1
        if offset >= chunk["size"]:
            assert chunk["finished"] is True
            break
    assert chunks > 10
    assert text.splitlines() == [f"ligne {i}: é😀" for i in range(300)]
    for variables, field in (
        ({"o": -1, "l": 10}, "offset"),
        ({"o": 0, "l": 0}, "limit"),
        ({"o": 0, "l": 10, "a": 2}, "attempt"),
    ):
        error = await users.error(LOG_CHUNK, {"id": run_id, "node": "a", **variables}, as_="alice")
        assert error["extensions"]["field"] == field


STOP = "mutation($id: ID!) { stopRun(id: $id) { id status } }"
RETRY = "mutation($id: ID!, $from: String) { retryRun(id: $id, fromNode: $from) { id status retryCount } }"
COPY = "mutation($id: ID!, $name: String, $p: JSON) { copyRun(id: $id, name: $name, params: $p) { id name params status } }"
NODES = "query($id: ID!) { run(id: $id) { status retryCount nodes { name status retryCount attempt attempts { number status } } } }"


def gated_spec() -> dict[str, Any]:
    """``a`` waits for the file named by param ``gate`` unless it exists; ``b`` follows ``a``."""
    gate = 'if [ -f "$gate" ]; then echo open; else echo closed; while true; do sleep 1; done; fi'
    return {
        "name": "gated",
        "params": [{"name": "gate"}, {"name": "word", "default": "x"}],
        "nodes": [
            {"name": "a", "command": gate, "inputs": [{"name": "gate", "from": "params.gate"}]},
            {
                "name": "b",
                "depends_on": ["a"],
                "command": 'echo "$w"',
                "inputs": [{"name": "w", "from": "params.word"}],
            },
        ],
    }


async def test_stop_retry_retry_from_node_and_copy(users: Server, shared_dir: Path) -> None:
    gate = shared_dir / "gate"
    run_id = await start(users, gated_spec(), {"gate": str(gate)})
    await wait_for(users, run_id, node="a", node_status="RUNNING")
    stopped = (await users.gql(STOP, {"id": run_id}, as_="alice"))["stopRun"]
    assert stopped["status"] in ("STOPPING", "STOPPED")
    events = await wait_for(users, run_id)
    assert events[-1]["runStatus"] == "STOPPED"
    error = await users.error(STOP, {"id": run_id}, as_="alice")
    assert error["extensions"] == {"code": "CONFLICT", "field": "id"}
    # retry after opening the gate: a runs again (attempt 2), b for the first time
    gate.write_text("")
    retried = (await users.gql(RETRY, {"id": run_id}, as_="alice"))["retryRun"]
    assert retried == {"id": run_id, "status": "PENDING", "retryCount": 1}
    events = await wait_for(users, run_id, run_status={"SUCCEEDED", "FAILED"})
    assert events[-1]["runStatus"] == "SUCCEEDED"
    nodes = (await users.gql(NODES, {"id": run_id}, as_="alice"))["run"]["nodes"]
    assert [(n["name"], n["status"], n["attempt"]) for n in nodes] == [
        ("a", "SUCCEEDED", 2),
        ("b", "SUCCEEDED", 1),
    ]
    assert [a["status"] for a in nodes[0]["attempts"]] == ["STOPPED", "SUCCEEDED"]
    assert (await node_log_lines(users, run_id, "a", 1))[0] == "closed"
    assert await node_log_lines(users, run_id, "a") == ["open"]
    # a succeeded run has nothing to retry, unless from a node
    error = await users.error(RETRY, {"id": run_id}, as_="alice")
    assert error["extensions"] == {"code": "CONFLICT", "field": "id"}
    error = await users.error(RETRY, {"id": run_id, "from": "nope"}, as_="alice")
    assert error["extensions"] == {"code": "INVALID_INPUT", "field": "fromNode"}
    await users.gql(RETRY, {"id": run_id, "from": "b"}, as_="alice")
    await wait_for(users, run_id, run_status={"SUCCEEDED", "FAILED"})
    nodes = (await users.gql(NODES, {"id": run_id}, as_="alice"))["run"]
    assert nodes["retryCount"] == 2
    assert [(n["name"], n["attempt"]) for n in nodes["nodes"]] == [("a", 2), ("b", 2)]
    # copy with an override: a new run of the same version
    copy = (await users.gql(COPY, {"id": run_id, "p": {"word": "copied"}}, as_="alice"))["copyRun"]
    assert copy["id"] != run_id and copy["name"] == "gated-v1-copy"
    assert copy["params"] == {"gate": str(gate), "word": "copied"}
    await wait_for(users, copy["id"])
    assert await node_log_lines(users, copy["id"], "b") == ["copied"]
    error = await users.error(COPY, {"id": run_id, "p": {"nope": 1}}, as_="alice")
    assert error["extensions"] == {"code": "INVALID_INPUT", "field": "params"}


@pytest.mark.parametrize(
    ("variables", "field", "needle"),
    [
        ({"params": {"nope": "1"}}, "params", "nope"),
        ({"params": {}}, "params", "gate"),
        ({"params": ["gate"]}, "params", "object"),
        ({"params": {"gate": "g"}, "name": "n" * 201}, "name", "200"),
    ],
)
async def test_create_run_input_errors(
    users: Server, variables: dict[str, Any], field: str, needle: str
) -> None:
    version = (await users.gql(CREATE_WF, {"spec": gated_spec()}, as_="alice"))["createWorkflow"]["id"]
    error = await users.error(CREATE_RUN, {"v": version, **variables}, as_="alice")
    assert error["extensions"] == {"code": "INVALID_INPUT", "field": field}
    assert needle in error["message"]
    assert (await users.gql("{ runs { items { id } } }", as_="alice"))["runs"]["items"] == []


TOKEN_PROBE = """
import json, os, urllib.request
query = '{ me { username } run(id: %s) { name status } }' % os.environ['AI_HUB_WORKFLOW_RUN_ID']
request = urllib.request.Request(
    os.environ['AI_HUB_API_URL'] + '/graphql',
    data=json.dumps({'query': query}).encode(),
    headers={'Authorization': 'Bearer ' + os.environ['AI_HUB_TOKEN'], 'Content-Type': 'application/json'},
)
with urllib.request.urlopen(request, timeout=30) as response:
    open('/tmp/workflow_space/answer.json', 'w').write(response.read().decode())
open('/tmp/workflow_space/token.txt', 'w').write(os.environ['AI_HUB_TOKEN'])
"""


async def test_run_token_acts_as_the_owner_while_the_run_is_active(users: Server) -> None:
    spec = {
        "name": "probe",
        "nodes": [
            {
                "name": "probe",
                "command": f"python3 - <<'EOF'\n{TOKEN_PROBE}\nEOF",
                "outputs": [
                    {"name": "answer", "path": "/tmp/workflow_space/answer.json", "type": "text"},
                    {"name": "token", "path": "/tmp/workflow_space/token.txt", "type": "text"},
                ],
            }
        ],
    }
    run_id = await start(users, spec)
    events = await wait_for(users, run_id)
    detail = (await users.gql(DETAIL, {"id": run_id}, as_="alice"))["run"]
    assert events[-1]["runStatus"] == "SUCCEEDED", detail["nodes"][0]["message"]
    outputs = {o["name"]: o["value"] for o in detail["nodes"][0]["outputs"]}
    answer = json.loads(outputs["answer"])
    assert answer == {"data": {"me": {"username": "alice"}, "run": {"name": "probe-v1", "status": "RUNNING"}}}
    # the run has ended: its token no longer works
    error = await users.error("{ me { username } }", token=outputs["token"])
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
