"""``aihub serve --role`` (issue 20): an ``api`` process and a ``worker`` process on PostgreSQL and Kafka. The seed's
example is created through the API, driven by the worker, and finishes SUCCEEDED; the API drives nothing and the
worker serves nothing but health, readiness and metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from aihub.settings import Settings
from tests.conftest import NewDatabaseUrl
from tests.graphql.harness import LOGIN
from tests.graphql.test_server import free_port, gql, serve
from tests.modules.conftest import HASH_FILE_INTERFACE, MakeRepo, make_repo  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "admin-password-1"
METRICS_TOKEN = "metrics-token-1"


def _finished_runs(text: str) -> dict[str, float]:
    return {
        sample.labels["status"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "aihub_runs_finished_total"
    }


async def _metrics(url: str) -> str:
    async with httpx.AsyncClient() as http:
        response = await http.get(url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200, response.text
    return response.text


async def test_an_api_and_a_worker_run_the_seed_example(
    tmp_path: Path,
    host_dir: Path,
    new_database_url: NewDatabaseUrl,
    tansu: str,
    prefix: str,
    make_repo: MakeRepo,  # noqa: F811  (the fixture imported above)
) -> None:
    settings = Settings(data_dir=host_dir / "data", database_url=await new_database_url("postgres"))
    env: dict[str, Any] = {
        "AIHUB_BUS": "kafka",
        "AIHUB_KAFKA_BOOTSTRAP": tansu,
        "AIHUB_KAFKA_TOPIC_PREFIX": prefix,
        "AIHUB_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "AIHUB_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "AIHUB_KAFKA_REBALANCE_TIMEOUT_MS": "3000",
        "AIHUB_ADMIN_PASSWORD": PASSWORD,
        "AIHUB_METRICS_TOKEN": METRICS_TOKEN,
        "AIHUB_ALLOW_FILE_GIT": "true",
    }
    async with (
        serve(settings, free_port(), AIHUB_ROLE="api", **env) as api,
        serve(settings, free_port(), AIHUB_ROLE="worker", **env) as worker,
    ):
        assert "role: api" in api.output and "role: worker" in worker.output
        async with httpx.AsyncClient(timeout=30) as http:
            # the worker serves health, readiness and metrics only
            assert (await http.get(worker.url + "/graphql")).status_code == 404
            assert (await http.get(worker.url + "/login")).status_code == 404
            assert (await http.get(worker.url + "/healthz")).json()["role"] == "worker"
            worker_ready = await http.get(worker.url + "/readyz")
            api_ready = await http.get(api.url + "/readyz")
        assert worker_ready.status_code == 200, worker_ready.text
        assert worker_ready.json()["checks"] == {"database": "ok", "bus": "ok", "executor": "ok"}
        assert api_ready.status_code == 200, api_ready.text
        assert api_ready.json()["checks"] == {"database": "ok", "bus": "ok"}  # it drives no runs

        token = (await gql(api.url, LOGIN, {"u": "admin", "p": PASSWORD}))["login"]["token"]
        spec = yaml.safe_load((ROOT / "examples" / "pass-params-demo.yaml").read_text())
        version = await gql(
            api.url, "mutation($s: JSON!) { createWorkflow(spec: $s) { id } }", {"s": spec}, token
        )
        run_id = (
            await gql(
                api.url,
                "mutation($v: ID!) { createRun(versionId: $v) { id } }",
                {"v": version["createWorkflow"]["id"]},
                token,
            )
        )["createRun"]["id"]
        query = "query($id: ID!) { run(id: $id) { status nodes { name status logs { text } } } }"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        while True:
            run = (await gql(api.url, query, {"id": run_id}, token))["run"]
            if run["status"] in ("SUCCEEDED", "FAILED", "STOPPED"):
                break
            assert loop.time() < deadline, f"the run did not finish: {run}\n{worker.output[-30:]}"
            await asyncio.sleep(0.2)
        assert run["status"] == "SUCCEEDED", (run, worker.output[-30:])
        step2 = next(node for node in run["nodes"] if node["name"] == "step2")
        assert step2["logs"]["text"].splitlines()[:2] == ["outparam1", "/tmp/outparam2.txt"]

        # a module build requested through the API is run by the worker
        repo = make_repo("hash-file")
        await gql(api.url, 'mutation { createCategory(name: "data") { id } }', None, token)
        module_input = {"category": "data", "name": "hash-file", "gitUrl": repo.url, "ref": "main"}
        module = (
            await gql(
                api.url,
                "mutation($i: CreateModuleInput!) { createModule(input: $i) { id status } }",
                {"i": {**module_input, **HASH_FILE_INTERFACE}},
                token,
            )
        )["createModule"]
        assert module["status"] == "BUILDING"
        deadline = loop.time() + 60
        while True:
            shown = (
                await gql(
                    api.url, "query($id: ID!) { module(id: $id) { status } }", {"id": module["id"]}, token
                )
            )["module"]
            if shown["status"] != "BUILDING":
                break
            assert loop.time() < deadline, f"the build did not end: {worker.output[-30:]}"
            await asyncio.sleep(0.2)
        assert shown["status"] == "BUILT", worker.output[-30:]

        # the worker drove the run, the API did not
        assert _finished_runs(await _metrics(worker.url)) == {"SUCCEEDED": 1.0}
        assert _finished_runs(await _metrics(api.url)) == {}
        assert await worker.terminate(), worker.output
        assert await api.terminate(), api.output


def test_a_bad_role_is_refused_naming_the_setting(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if not k.startswith("AIHUB_")}
    environ |= {"AIHUB_DATA_DIR": str(tmp_path), "AIHUB_ROLE": "bogus"}
    command = [sys.executable, "-m", "aihub.cli", "serve", "--port", str(free_port())]
    by_env = subprocess.run(command, env=environ, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert by_env.returncode == 2
    assert by_env.stderr.strip() == "error: AIHUB_ROLE: Input should be 'all', 'api' or 'worker'"
    environ.pop("AIHUB_ROLE")
    by_flag = subprocess.run(
        [*command, "--role", "bogus"], env=environ, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert by_flag.returncode == 2 and "argument --role: invalid choice: 'bogus'" in by_flag.stderr


async def test_not_ready_when_the_broker_is_gone(tmp_path: Path) -> None:
    from tests.graphql.harness import start_server, stop_server
    from tests.kafka.support import start_tansu, stop_tansu

    proc, address = start_tansu(tmp_path)
    try:
        settings = Settings(data_dir=tmp_path / "data", bus="kafka", kafka_bootstrap=address, role="api")
        server, task, _ = await start_server(settings)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}", timeout=30) as http:
                assert (await http.get("/readyz")).status_code == 200
                stop_tansu(proc)
                gone = await http.get("/readyz")
                assert (await http.get("/healthz")).status_code == 200
            assert gone.status_code == 503, gone.text
            assert gone.json()["failing"] == ["bus"] and gone.json()["checks"]["database"] == "ok"
            assert gone.json()["message"].startswith("not ready: bus: ")
        finally:
            await stop_server(server, task)
    finally:
        stop_tansu(proc)
