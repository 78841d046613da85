"""Two "hosts" that share nothing but PostgreSQL, the Kafka broker (Tansu) and an S3 server (moto_server).

Host A and host B each have their own data dir, one API replica and one engine worker. The seed's example
runs: step1 on the worker that owns the run; that worker is killed with SIGKILL while step2 runs there; the
other worker takes the run over and runs step2 again, fetching step1's outputs from the bucket, and prints the
seed's five lines. step1's log is served by the API replica of the other host (from the archive), and
neither data dir holds an artifact.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import yaml

from aihub.settings import Settings
from tests.conftest import NewDatabaseUrl
from tests.graphql.harness import LOGIN
from tests.graphql.test_server import ServeProcess, free_port, gql, serve
from tests.polling import gate_wait
from tests.s3support import S3Server

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "admin-password-1"
SEED_LINES = ["outparam1", "/tmp/outparam2.txt", "/tmp/outparam3", "outparam2", "file1"]
RUN = """query($id: ID!) { run(id: $id) { status nodes { name status attempt
  outputs { name value digest } logs { text } } } }"""


def _spec(gate: Path) -> dict[str, Any]:
    """The seed's example; step1 says where it ran, step2 waits at a gate first and may be retried once."""
    spec = yaml.safe_load((ROOT / "examples" / "pass-params-demo.yaml").read_text())
    step1, step2 = spec["nodes"]
    step1["command"] = "echo step1 writes its outputs\n" + step1["command"]
    step2["command"] = gate_wait(gate) + "\n" + step2["command"]
    step2["retries"] = 1
    return spec


def _ended(worker: ServeProcess, node: str) -> list[dict[str, Any]]:
    lines = []
    for raw in worker.output:
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict) and line.get("node") == node and "ended" in str(line.get("message")):
            lines.append(line)
    return lines


async def _until(what: str, check: Any, timeout: float = 90) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_two_hosts_share_artifacts_and_logs_through_the_object_store(
    host_dir: Path, new_database_url: NewDatabaseUrl, tansu: str, prefix: str, s3_server: S3Server
) -> None:
    database = await new_database_url("postgres")
    bucket = s3_server.bucket()
    hosts = {name: host_dir / f"host-{name}" for name in ("a", "b")}
    env = {
        "AIHUB_BUS": "kafka",
        "AIHUB_KAFKA_BOOTSTRAP": tansu,
        "AIHUB_KAFKA_TOPIC_PREFIX": prefix,
        "AIHUB_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "AIHUB_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "AIHUB_KAFKA_REBALANCE_TIMEOUT_MS": "3000",
        "AIHUB_ADMIN_PASSWORD": PASSWORD,
        "AIHUB_LOG_FORMAT": "json",
        "AIHUB_ARTIFACT_STORE": f"s3://{bucket}/aihub",
        "AIHUB_S3_ENDPOINT_URL": s3_server.endpoint,
    }
    gate = host_dir / "gate"
    async with AsyncExitStack() as stack:
        apis: dict[str, ServeProcess] = {}
        workers: dict[str, ServeProcess] = {}
        for name, root in hosts.items():
            settings = Settings(data_dir=root / "data", database_url=database)
            apis[name] = await stack.enter_async_context(
                serve(settings, free_port(), AIHUB_ROLE="api", **env)
            )
            workers[name] = await stack.enter_async_context(
                serve(settings, free_port(), AIHUB_ROLE="worker", **env)
            )
        api = apis["a"].url
        token = (await gql(api, LOGIN, {"u": "admin", "p": PASSWORD}))["login"]["token"]
        version = await gql(
            api, "mutation($s: JSON!) { createWorkflow(spec: $s) { id } }", {"s": _spec(gate)}, token
        )
        run_id = (
            await gql(
                api,
                "mutation($v: ID!) { createRun(versionId: $v) { id } }",
                {"v": version["createWorkflow"]["id"]},
                token,
            )
        )["createRun"]["id"]

        async def step2_running() -> dict[str, Any] | None:
            run = (await gql(api, RUN, {"id": run_id}, token))["run"]
            nodes = {n["name"]: n for n in run["nodes"]}
            return run if nodes["step2"]["status"] == "RUNNING" else None

        await _until("step2 to run", step2_running)

        async def driver() -> str | None:
            async with httpx.AsyncClient(timeout=10) as http:
                for name, worker in workers.items():
                    if (await http.get(worker.url + "/healthz")).json()["active_runs"] == 1:
                        return name
            return None

        first = await _until("a worker to drive the run", driver)
        other = "b" if first == "a" else "a"
        step1_ends = [e["message"] for e in _ended(workers[first], "step1")]
        assert len(step1_ends) == 1 and step1_ends[0].startswith("attempt 1 ended SUCCEEDED"), step1_ends

        # the worker that runs step2 dies; the other takes the run over and runs step2 again
        workers[first].proc.kill()
        await workers[first].proc.wait()
        gate.touch()

        async def finished() -> dict[str, Any] | None:
            run = (await gql(apis[other].url, RUN, {"id": run_id}, token))["run"]
            return run if run["status"] in ("SUCCEEDED", "FAILED", "STOPPED") else None

        run = await _until("the run to finish", finished, timeout=120)
        nodes = {n["name"]: n for n in run["nodes"]}
        assert run["status"] == "SUCCEEDED", (run, workers[other].output[-20:])
        assert nodes["step2"]["attempt"] == 2, [line for line in workers[other].output if "step2" in line]
        assert nodes["step2"]["logs"]["text"].splitlines() == SEED_LINES
        assert _ended(workers[other], "step2"), "step2 did not end on the other worker"
        assert not _ended(workers[other], "step1"), "step1 ran on the other worker too"

        # step1's log, written on the first host, served by the API replica of the other one
        assert not (hosts[other] / "data" / "logs" / str(run_id) / "step1").exists()
        # (its first line is the platform's note that the local executor does not use step1's image)
        assert nodes["step1"]["logs"]["text"].splitlines()[-1:] == ["step1 writes its outputs"]

        # the outputs are intact: what the other replica serves hashes to the recorded digests
        async with httpx.AsyncClient(timeout=30) as http:
            for output in nodes["step1"]["outputs"]:
                if output["digest"] is None:
                    continue
                url = f"{apis[other].url}/api/runs/{run_id}/nodes/step1/outputs/{output['name']}"
                response = await http.get(url, headers={"Authorization": f"Bearer {token}"})
                assert response.status_code == 200, response.text
                assert hashlib.sha256(response.content).hexdigest() == output["digest"]

    # no artifact in either data dir: no artifacts/ directory, no archive left anywhere
    for root in hosts.values():
        assert not (root / "data" / "artifacts").exists()
        leftovers = [p for p in (root / "data").rglob("*.tar.gz")]
        assert leftovers == [], leftovers
