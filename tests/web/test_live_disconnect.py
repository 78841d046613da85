"""A live run stream whose browser goes away lets go of everything it held: its bus subscription is closed (a
stream ended by a shutdown is tested in tests/kafka/test_shutdown.py)."""

from __future__ import annotations

from pathlib import Path

import httpx

from aihub.settings import Settings
from tests.graphql.harness import LOGIN, start_server, stop_server
from tests.polling import until

PASSWORD = "admin-password-1"
SPEC = {"name": "held-open", "nodes": [{"name": "a", "command": "sleep 30"}]}


async def test_a_closed_run_stream_closes_its_subscription(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", admin_password=PASSWORD, stop_grace_seconds=1)
    server, task, app = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}", timeout=30) as http:
            body = await http.post(
                "/graphql", json={"query": LOGIN, "variables": {"u": "admin", "p": PASSWORD}}
            )
            token = body.json()["data"]["login"]["token"]
            headers = {"Authorization": f"Bearer {token}"}
            created = await http.post(
                "/graphql",
                json={
                    "query": "mutation($s: JSON!) { createWorkflow(spec: $s) { id } }",
                    "variables": {"s": SPEC},
                },
                headers=headers,
            )
            version = created.json()["data"]["createWorkflow"]["id"]
            run = await http.post(
                "/graphql",
                json={
                    "query": "mutation($v: ID!) { createRun(versionId: $v) { id } }",
                    "variables": {"v": version},
                },
                headers=headers,
            )
            run_id = int(run.json()["data"]["createRun"]["id"])

            await http.get("/login")
            csrf = http.cookies["aihub_csrf"]
            login = await http.post(
                "/login", data={"csrf_token": csrf, "username": "admin", "password": PASSWORD, "next": "/"}
            )
            assert login.status_code == 303, login.text
            bus = app.state.runtime.bus
            async with http.stream("GET", f"/runs/{run_id}/live") as stream:
                async for line in stream.aiter_lines():
                    if line == "event: synced":
                        break
                assert bus._by_run.get(run_id), "the stream holds a subscription of the run"
            # the browser went away
            await until(lambda: not bus._by_run.get(run_id), timeout=15, what="the subscription to close")
            stop = await http.post(
                "/graphql",
                json={
                    "query": "mutation($id: ID!) { stopRun(id: $id) { id } }",
                    "variables": {"id": str(run_id)},
                },
                headers=headers,
            )
            assert not stop.json().get("errors"), stop.json()
    finally:
        await stop_server(server, task)
