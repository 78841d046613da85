"""``/healthz`` and ``/readyz`` (issue 20): ready when the database, the bus and the executor answer; 503 naming
the failing part otherwise."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

from aihub.settings import Settings
from tests.conftest import NewDatabaseUrl, _admin_connection
from tests.graphql.harness import start_server, stop_server


async def test_ready_when_everything_answers(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    server, task, _ = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}") as http:
            health = await http.get("/healthz")
            ready = await http.get("/readyz")
        assert health.status_code == 200 and health.json()["role"] == "all"
        assert ready.status_code == 200, ready.text
        assert ready.json() == {
            "status": "ready",
            "checks": {"database": "ok", "bus": "ok", "executor": "ok"},
        }
    finally:
        await stop_server(server, task)


async def test_not_ready_without_the_executors_scratch_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    server, task, _ = await start_server(settings)
    try:
        shutil.rmtree(settings.data_dir / "runs")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}") as http:
            health = await http.get("/healthz")
            ready = await http.get("/readyz")
        assert health.status_code == 200  # alive, just not ready
        assert ready.status_code == 503
        body = ready.json()
        assert body["failing"] == ["executor"]
        assert body["checks"]["database"] == "ok" and body["checks"]["bus"] == "ok"
        assert "executor" in body["message"] and "is not a directory" in body["message"]
    finally:
        await stop_server(server, task)


async def test_not_ready_when_the_database_refuses(tmp_path: Path, new_database_url: NewDatabaseUrl) -> None:
    url = await new_database_url("postgres")
    name = url.rsplit("/", 1)[1]
    settings = Settings(data_dir=tmp_path / "data", database_url=url)
    server, task, _ = await start_server(settings)
    admin = await _admin_connection()
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}", timeout=30) as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert ready.json()["failing"] == ["database"]
            assert ready.json()["checks"]["bus"] == "ok"
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            again = await http.get("/readyz")
        assert again.status_code == 200, again.text
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
        await stop_server(server, task)
