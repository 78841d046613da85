"""``AIHUB_LOG_FORMAT=json`` (issue 20): ``aihub serve`` logs one JSON object a line with level, time, logger, and
the request id, run id and node where known."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import yaml

from aihub.settings import Settings
from tests.graphql.harness import LOGIN
from tests.graphql.test_server import free_port, gql, serve

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "admin-password-1"
#: what ``aihub serve`` prints itself (not log lines)
PRINTED = ("AIHub Workflow is ready on ", "data dir: ", "role: ")


async def test_json_log_lines(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    async with serve(settings, free_port(), AIHUB_LOG_FORMAT="json", AIHUB_ADMIN_PASSWORD=PASSWORD) as server:
        token = (await gql(server.url, LOGIN, {"u": "admin", "p": PASSWORD}))["login"]["token"]
        spec = yaml.safe_load((ROOT / "examples" / "pass-params-demo.yaml").read_text())
        version = await gql(
            server.url, "mutation($s: JSON!) { createWorkflow(spec: $s) { id } }", {"s": spec}, token
        )
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.post(
                server.url + "/graphql",
                json={
                    "query": "mutation($v: ID!) { createRun(versionId: $v) { id } }",
                    "variables": {"v": version["createWorkflow"]["id"]},
                },
                headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-json-1"},
            )
            # without an X-Request-ID (or with a bad one) a fresh id: the one GraphQL answers with
            fresh = await http.post(
                server.url + "/graphql",
                json={"query": "{ me { username } }"},
                headers={"Authorization": f"Bearer {token}", "X-Request-ID": "bad id with spaces"},
            )
        fresh_id = fresh.headers["x-request-id"]
        assert fresh_id != "bad id with spaces"
        run_id = int(response.json()["data"]["createRun"]["id"])

        def records() -> list[dict[str, Any]]:
            return [json.loads(line) for line in list(server.output) if line.startswith("{")]

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not any(r.get("run_id") == run_id and "finished" in r["message"] for r in records()):
            assert loop.time() < deadline, server.output
            await asyncio.sleep(0.1)
        assert await server.terminate(), server.output

    for line in server.output:
        assert line.startswith("{") or line.startswith(PRINTED), line
    logged = records()
    assert all({"time", "level", "logger", "message"} <= set(r) for r in logged)
    assert any(
        r["logger"] == "uvicorn.error" and "Application startup complete" in r["message"] for r in logged
    )
    # the request's id, from its X-Request-ID
    create = [r for r in logged if r.get("request_id") == "req-json-1"]
    assert create and all(r["logger"] == "uvicorn.access" for r in create), create
    assert "POST /graphql" in create[0]["message"]
    assert [r["logger"] for r in logged if r.get("request_id") == fresh_id] == ["uvicorn.access"]
    # run id and node from the engine
    ends = [r for r in logged if r["logger"] == "aihub.engine" and "ended SUCCEEDED" in r["message"]]
    assert sorted((r["run_id"], r["node"]) for r in ends) == [(run_id, "step1"), (run_id, "step2")]
    finished = next(r for r in logged if "finished" in r["message"])
    assert finished["run_id"] == run_id and "node" not in finished and finished["level"] == "INFO"
