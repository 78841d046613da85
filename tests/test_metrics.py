"""``/metrics`` (issue 20): the Prometheus text format of one server, its token, and what the seed's example
leaves in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from aihub.settings import Settings
from tests.graphql.harness import LOGIN, start_server, stop_server
from tests.polling import gate_wait, until

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "metrics-token-1"
PASSWORD = "admin-password-1"


def _settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", admin_password=PASSWORD, **values)


async def _gql(
    http: httpx.AsyncClient, query: str, variables: dict[str, Any], token: str | None = None
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = (
        await http.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
    ).json()
    assert not body.get("errors"), body
    return body["data"]


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name → [(labels, value)], parsed by prometheus_client's own parser."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(
        value for got, value in samples.get(name, []) if all(got.get(k) == v for k, v in labels.items())
    )


async def test_the_seed_example_in_metrics(tmp_path: Path) -> None:
    settings = _settings(tmp_path, metrics_token=TOKEN)
    server, task, _ = await start_server(settings)
    url = f"http://127.0.0.1:{settings.port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            token = (await _gql(http, LOGIN, {"u": "admin", "p": PASSWORD}))["login"]["token"]
            spec = yaml.safe_load((ROOT / "examples" / "pass-params-demo.yaml").read_text())
            created = await _gql(
                http,
                "mutation CreateSeed($s: JSON!) { createWorkflow(spec: $s) { id } }",
                {"s": spec},
                token,
            )
            run = await _gql(
                http,
                "mutation StartSeed($v: ID!) { createRun(versionId: $v) { id } }",
                {"v": created["createWorkflow"]["id"]},
                token,
            )
            run_id = run["createRun"]["id"]
            status_query = "query RunStatus($id: ID!) { run(id: $id) { status } }"

            async def finished() -> bool:
                status = (await _gql(http, status_query, {"id": run_id}, token))["run"]["status"]
                return status in ("SUCCEEDED", "FAILED", "STOPPED")

            await until(finished, timeout=60, what="the seed's run to finish")
            assert (await _gql(http, status_query, {"id": run_id}, token))["run"]["status"] == "SUCCEEDED"
            await http.get(f"/runs/{run_id}")  # a page with an id in its path

            response = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        samples = _samples(response.text)

        assert _total(samples, "aihub_runs_finished_total", status="SUCCEEDED") == 1
        assert _total(samples, "aihub_runs_finished_total") == 1
        assert _total(samples, "aihub_node_attempts_total", status="SUCCEEDED", cluster="local") == 2
        assert _total(samples, "aihub_node_attempts_total") == 2
        # the histograms saw exactly the run's attempts
        assert _total(samples, "aihub_node_duration_seconds_count", cluster="local") == 2
        assert _total(samples, "aihub_node_queue_wait_seconds_count", cluster="local") == 2
        assert _total(samples, "aihub_node_duration_seconds_bucket", cluster="local", le="+Inf") == 2
        assert _total(samples, "aihub_node_duration_seconds_sum") > 0
        assert _total(samples, "aihub_node_handoff_seconds_count", cluster="local") == 1  # step1 → step2
        # the bus: every status change was published, none failed (the memory bus has no delivery lag)
        assert _total(samples, "aihub_bus_published_events_total", result="ok") >= 6
        assert _total(samples, "aihub_bus_published_events_total", result="error") == 0
        assert _total(samples, "aihub_bus_publish_seconds_count") == _total(
            samples, "aihub_bus_published_events_total", result="ok"
        )
        # capacity: nothing held, nothing queued once the run is over; the local cluster has CPUs
        assert _total(samples, "aihub_capacity_in_use", cluster="local", resource="cpu_millis") == 0
        assert _total(samples, "aihub_capacity_total", cluster="local", resource="cpu_millis") > 0
        assert _total(samples, "aihub_nodes_queued", cluster="local") == 0
        assert ({"cluster": "local"}, 0.0) in samples["aihub_nodes_queued"]
        # HTTP by route template, never by raw path
        routes = {labels["route"] for labels, _ in samples["aihub_http_request_duration_seconds_count"]}
        assert "/graphql" in routes and "/runs/{run_id:int}" in routes, routes
        assert not any(run_id in route for route in routes), routes
        # GraphQL operations by name
        assert _total(samples, "aihub_graphql_operations_total", type="mutation", operation="StartSeed") == 1
        assert _total(samples, "aihub_graphql_operations_total", type="query", operation="RunStatus") >= 2
    finally:
        await stop_server(server, task)


async def test_metrics_want_the_token(tmp_path: Path) -> None:
    settings = _settings(tmp_path, metrics_token=TOKEN)
    server, task, _ = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}") as http:
            missing = await http.get("/metrics")
            wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
            right = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert missing.status_code == 401 and "AIHUB_METRICS_TOKEN" in missing.text
        assert missing.headers["www-authenticate"] == "Bearer"
        assert wrong.status_code == 401
        assert right.status_code == 200 and "aihub_runs_finished" in right.text
    finally:
        await stop_server(server, task)


async def test_metrics_are_off_without_a_token(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    server, task, _ = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}") as http:
            response = await http.get("/metrics", headers={"Authorization": "Bearer anything"})
        assert response.status_code == 404 and "AIHUB_METRICS_TOKEN" in response.text
    finally:
        await stop_server(server, task)


def test_two_apps_keep_their_own_counters(tmp_path: Path) -> None:
    from aihub.app import create_app

    first = create_app(_settings(tmp_path / "a"))
    second = create_app(_settings(tmp_path / "b"))
    first.state.metrics.runs.labels("SUCCEEDED").inc()
    assert first.state.metrics.registry is not second.state.metrics.registry
    assert b'aihub_runs_finished_total{status="SUCCEEDED"} 1.0' in first.state.metrics.exposition()
    assert b"aihub_runs_finished_total{" not in second.state.metrics.exposition()


def test_operation_names_are_bounded() -> None:
    from aihub.metrics import MAX_OPERATION_NAMES, Metrics

    metrics = Metrics()
    assert metrics.operation_label(None) == "(anonymous)"
    assert [metrics.operation_label(f"Op{i}") for i in range(MAX_OPERATION_NAMES)][
        -1
    ] == f"Op{MAX_OPERATION_NAMES - 1}"
    assert metrics.operation_label("OneTooMany") == "(other)"
    assert metrics.operation_label("Op0") == "Op0"


async def test_capacity_and_queue_gauges_while_nodes_wait(tmp_path: Path) -> None:
    import os
    import shutil
    import tempfile

    shared = Path(
        tempfile.mkdtemp(prefix="aihub-test-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    )
    shared.chmod(0o777)  # nodes run as nobody when the server is root
    gate = shared / "gate"
    wait = gate_wait(gate)
    spec = {"name": "two-waiters", "nodes": [{"name": "a", "command": wait}, {"name": "b", "command": wait}]}
    settings = _settings(tmp_path, metrics_token=TOKEN, local_cpus=1)  # room for one node at a time
    server, task, _ = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}", timeout=30) as http:
            token = (await _gql(http, LOGIN, {"u": "admin", "p": PASSWORD}))["login"]["token"]
            version = await _gql(
                http, "mutation($s: JSON!) { createWorkflow(spec: $s) { id } }", {"s": spec}, token
            )
            run_id = (
                await _gql(
                    http,
                    "mutation($v: ID!) { createRun(versionId: $v) { id } }",
                    {"v": version["createWorkflow"]["id"]},
                    token,
                )
            )["createRun"]["id"]

            async def scrape() -> dict[str, list[tuple[dict[str, str], float]]]:
                response = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
                return _samples(response.text)

            async def one_runs_one_waits() -> bool:
                samples = await scrape()
                return (
                    _total(samples, "aihub_capacity_in_use", cluster="local", resource="cpu_millis") == 1000
                    and _total(samples, "aihub_nodes_queued", cluster="local") == 1
                    and _total(samples, "aihub_active_runs") == 1
                )

            await until(one_runs_one_waits, timeout=60, what="one node running and one queued")
            gate.write_text("")

            async def finished() -> bool:
                query = "query($id: ID!) { run(id: $id) { status } }"
                return (await _gql(http, query, {"id": run_id}, token))["run"]["status"] == "SUCCEEDED"

            await until(finished, timeout=60, what="the run to succeed")
            samples = await scrape()
        assert _total(samples, "aihub_capacity_in_use", cluster="local", resource="cpu_millis") == 0
        assert _total(samples, "aihub_nodes_queued", cluster="local") == 0
        assert _total(samples, "aihub_active_runs") == 0
        assert _total(samples, "aihub_node_queue_wait_seconds_count", cluster="local") == 2
    finally:
        await stop_server(server, task)
        shutil.rmtree(shared, ignore_errors=True)
