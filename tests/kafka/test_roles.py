"""``aihub serve --role`` (issue 20): an ``api`` process and a ``worker`` process on PostgreSQL and Kafka. The seed's
example is created through the API, driven by the worker, and finishes SUCCEEDED; the API drives nothing and the
worker serves nothing but health, readiness and metrics."""

from __future__ import annotations

import asyncio
import contextlib
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


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name → [(labels, value)], parsed by prometheus_client's own parser."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _total(texts: list[str], name: str, **labels: str) -> float:
    """``name``'s samples with ``labels`` summed over the processes' ``/metrics`` texts."""
    return sum(
        value
        for text in texts
        for got, value in _samples(text).get(name, [])
        if all(got.get(k) == v for k, v in labels.items())
    )


def _series(text: str) -> set[str]:
    """The names of the samples a ``/metrics`` text holds (``_total``, ``_bucket``, ... as written)."""
    return set(_samples(text))


def dashboard_metrics() -> set[str]:
    """Every ``aihub_*`` series name the Grafana dashboard's queries use."""
    import json
    import re

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "aihub.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    return {name for expr in exprs for name in re.findall(r"\baihub_[a-z_]+", expr)}


async def _metrics(url: str) -> str:
    async with httpx.AsyncClient() as http:
        response = await http.get(url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200, response.text
    return response.text


async def _watch_run(url: str, token: str, run_id: str) -> list[dict[str, Any]]:
    """The run's events through ``url``'s GraphQL subscription, until the run has finished."""
    from tests.graphql.harness import WsClient

    query = "subscription($id: ID!) { runEvents(runId: $id) { node nodeStatus runStatus } }"
    seen: list[dict[str, Any]] = []
    async with WsClient(url.replace("http", "ws") + "/graphql", {"token": token}) as ws:
        op = await ws.subscribe(query, {"id": run_id})
        async with asyncio.timeout(120):
            async for data in ws.results(op, timeout=120):
                seen.append(data["runEvents"])
                if seen[-1]["node"] is None and seen[-1]["runStatus"] in ("SUCCEEDED", "FAILED", "STOPPED"):
                    return seen
    raise AssertionError(f"the subscription ended before the run: {seen}")


async def _wait_built(url: str, token: str, module_id: str, output: list[str]) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 90
    while True:
        shown = (await gql(url, "query($id: ID!) { module(id: $id) { status } }", {"id": module_id}, token))[
            "module"
        ]
        if shown["status"] != "BUILDING":
            return str(shown["status"])
        assert loop.time() < deadline, f"the build did not end: {output[-30:]}"
        await asyncio.sleep(0.2)


#: a post-checkout hook (git runs it at the end of each clone of a build) that holds the build until ``gate``
#: exists and writes ``overlap`` to ``log`` when another build's clone is alive at the same time
HOLDING_HOOK = """#!/bin/sh
d='{dir}'
others() {{
  for f in "$d"/active/*; do
    [ -e "$f" ] || continue
    pid=$(basename "$f")
    [ "$pid" != "$$" ] || continue
    # alive and not a zombie (a killed clone's hook may wait to be reaped)
    if [ -e "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then
      echo "overlap $$ $pid" >> "$d/log"
    fi
  done
}}
others
touch "$d/active/$$"
echo "clone $$" >> "$d/log"
while [ ! -f "$d/gate" ]; do sleep 0.1; done
others
rm -f "$d/active/$$"
"""


def holding_git_config(directory: Path) -> Path:
    """A git configuration (``GIT_CONFIG_GLOBAL``) whose clones wait for ``directory/gate``."""
    (directory / "hooks").mkdir(parents=True)
    (directory / "active").mkdir()
    (directory / "log").write_text("")
    hook = directory / "hooks" / "post-checkout"
    hook.write_text(HOLDING_HOOK.format(dir=directory))
    hook.chmod(0o755)
    config = directory / "gitconfig"
    config.write_text(f"[core]\n\thooksPath = {directory / 'hooks'}\n")
    return config


def _env(tansu: str, prefix: str) -> dict[str, Any]:
    return {
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


async def test_two_apis_and_two_workers_run_the_seed_example(
    tmp_path: Path,
    host_dir: Path,
    new_database_url: NewDatabaseUrl,
    tansu: str,
    prefix: str,
    make_repo: MakeRepo,  # noqa: F811  (the fixture imported above)
) -> None:
    """Two ``api`` and two ``worker`` processes: a module registered before any worker runs is built by exactly
    one of the two workers starting together; the seed's example created through one API replica is watched
    through the other, driven by one worker (each node once), and counted in the workers' ``/metrics``."""
    settings = Settings(data_dir=host_dir / "data", database_url=await new_database_url("postgres"))
    env = _env(tansu, prefix)
    async with contextlib.AsyncExitStack() as stack:
        api1, api2 = await asyncio.gather(
            stack.enter_async_context(serve(settings, free_port(), AIHUB_ROLE="api", **env)),
            stack.enter_async_context(serve(settings, free_port(), AIHUB_ROLE="api", **env)),
        )
        assert "role: api" in api1.output and "role: api" in api2.output
        token = (await gql(api1.url, LOGIN, {"u": "admin", "p": PASSWORD}))["login"]["token"]

        # a module registered while no worker runs stays BUILDING
        repo = make_repo("hash-file")
        await gql(api1.url, 'mutation { createCategory(name: "data") { id } }', None, token)
        module_input = {"category": "data", "name": "hash-file", "gitUrl": repo.url, "ref": "main"}
        module = (
            await gql(
                api1.url,
                "mutation($i: CreateModuleInput!) { createModule(input: $i) { id status } }",
                {"i": {**module_input, **HASH_FILE_INTERFACE}},
                token,
            )
        )["createModule"]
        assert module["status"] == "BUILDING"

        # two workers start together; their clones wait for a gate, so a build run twice would overlap
        hold = tmp_path / "hold"
        git_config = holding_git_config(hold)
        worker_env = {**env, "AIHUB_ROLE": "worker", "GIT_CONFIG_GLOBAL": str(git_config)}
        worker1, worker2 = await asyncio.gather(
            stack.enter_async_context(serve(settings, free_port(), **worker_env)),
            stack.enter_async_context(serve(settings, free_port(), **worker_env)),
        )
        workers, apis = [worker1, worker2], [api1, api2]
        output = [line for process in workers for line in process.output]
        async with httpx.AsyncClient(timeout=30) as http:
            for worker in workers:
                # a worker serves health, readiness and metrics only
                assert (await http.get(worker.url + "/graphql")).status_code == 404
                assert (await http.get(worker.url + "/login")).status_code == 404
                assert (await http.get(worker.url + "/healthz")).json()["role"] == "worker"
                ready = await http.get(worker.url + "/readyz")
                assert ready.status_code == 200, ready.text
                assert ready.json()["checks"] == {"database": "ok", "bus": "ok", "executor": "ok"}
            api_ready = await http.get(api2.url + "/readyz")
        assert api_ready.status_code == 200, api_ready.text
        assert api_ready.json()["checks"] == {"database": "ok", "bus": "ok"}  # it drives no runs

        # the seed's example: created through one API replica, watched through the other
        spec = yaml.safe_load((ROOT / "examples" / "pass-params-demo.yaml").read_text())
        version = await gql(
            api1.url, "mutation($s: JSON!) { createWorkflow(spec: $s) { id } }", {"s": spec}, token
        )
        run_id = (
            await gql(
                api1.url,
                "mutation($v: ID!) { createRun(versionId: $v) { id } }",
                {"v": version["createWorkflow"]["id"]},
                token,
            )
        )["createRun"]["id"]
        events = await _watch_run(api2.url, token, run_id)
        output = [line for process in workers for line in process.output]
        assert events[-1]["runStatus"] == "SUCCEEDED", (events, output[-40:])
        assert {(e["node"], e["nodeStatus"]) for e in events if e["node"]} >= {
            ("step1", "SUCCEEDED"),
            ("step2", "SUCCEEDED"),
        }, events
        query = "query($id: ID!) { run(id: $id) { nodes { name attempts { number } logs { text } } } }"
        nodes = {n["name"]: n for n in (await gql(api2.url, query, {"id": run_id}, token))["run"]["nodes"]}
        assert {name: n["attempts"] for name, n in nodes.items()} == {
            "step1": [{"number": 1}],
            "step2": [{"number": 1}],
        }
        assert nodes["step2"]["logs"]["text"].splitlines()[:2] == ["outparam1", "/tmp/outparam2.txt"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while "clone" not in (hold / "log").read_text():
            assert loop.time() < deadline, f"no worker began the build: {output[-40:]}"
            await asyncio.sleep(0.1)
        (hold / "gate").write_text("")
        assert await _wait_built(api2.url, token, module["id"], output) == "BUILT", output[-40:]
        assert "overlap" not in (hold / "log").read_text(), "\n".join(
            [(hold / "log").read_text(), *worker1.output, "-----", *worker2.output]
        )

        # one worker drove the run and one built the module, each once; the API replicas drove nothing
        worker_texts = [await _metrics(worker.url) for worker in workers]
        api_texts = [await _metrics(api.url) for api in apis]
        assert _total(worker_texts, "aihub_runs_finished_total") == 1
        assert _total(worker_texts, "aihub_runs_finished_total", status="SUCCEEDED") == 1
        assert _total(worker_texts, "aihub_node_attempts_total") == 2
        assert _total(worker_texts, "aihub_node_attempts_total", status="SUCCEEDED") == 2
        assert _total(worker_texts, "aihub_node_duration_seconds_count") == 2
        assert _total(worker_texts, "aihub_node_queue_wait_seconds_count") == 2
        assert _total(worker_texts, "aihub_node_handoff_seconds_count") == 1  # step1 → step2
        assert _total(worker_texts, "aihub_module_builds_total") == 1
        assert _total(worker_texts, "aihub_module_builds_total", result="BUILT") == 1
        assert _total(worker_texts, "aihub_module_build_duration_seconds_count", result="BUILT") == 1
        assert _total(api_texts, "aihub_runs_finished_total") == 0
        assert _total(api_texts, "aihub_module_builds_total") == 0
        # the bus: the workers published the run's events and the API replicas received them
        assert _total(worker_texts, "aihub_bus_published_events_total", result="ok") >= 6
        assert _total(worker_texts, "aihub_bus_published_events_total", result="error") == 0
        assert _total(api_texts, "aihub_bus_delivery_lag_seconds_count") >= 6
        # the database pool (PostgreSQL) of every process
        for text in [*worker_texts, *api_texts]:
            assert _total([text], "aihub_db_pool_max_connections") > 0
            assert _total([text], "aihub_db_pool_connections", state="idle") >= 0

        # every series the Grafana dashboard queries is in the processes' /metrics, with samples
        shown = set().union(*(_series(text) for text in [*worker_texts, *api_texts]))
        assert dashboard_metrics() <= shown, dashboard_metrics() - shown

        for process in [*workers, *apis]:
            assert await process.terminate(), process.output


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
