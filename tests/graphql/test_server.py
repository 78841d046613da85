"""``aihub serve`` as users run it: a child process with the embedded defaults. First start creates ``admin``
(password printed once), ``/healthz`` answers, GraphiQL is served to browsers, and a graceful shutdown while a
node runs loses nothing: after a restart the run finishes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from aihub.settings import Settings
from tests.graphql.harness import LOGIN, free_socket
from tests.polling import gate_wait

ROOT = Path(__file__).resolve().parents[2]
RUN_EVENTS = "subscription($id: ID!) { runEvents(runId: $id) { node nodeStatus runStatus } }"


class ServeProcess:
    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc, self.url = proc, url
        self.output: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.output.append(raw.decode(errors="replace").rstrip("\n"))

    async def ready(self, timeout: float = 60) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with httpx.AsyncClient() as http:
            while True:
                if self.proc.returncode is not None:
                    raise AssertionError(f"aihub serve exited: {self.output}")
                try:
                    if (await http.get(self.url + "/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if loop.time() > deadline:
                    raise AssertionError(f"aihub serve did not start: {self.output}")
                await asyncio.sleep(0.1)

    async def terminate(self, timeout: float = 30) -> bool:
        """SIGTERM; True when the server shut down gracefully (lifespan finished, then the signal's exit)."""
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            await self._reader
        # uvicorn re-raises the signal once it has shut down, so the exit status is the signal's
        return code in (0, -signal.SIGTERM) and any(
            "Application shutdown complete" in line for line in self.output
        )


@asynccontextmanager
async def serve(settings: Settings, port: int, **env: str) -> AsyncIterator[ServeProcess]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AIHUB_")}
    environ |= {"AIHUB_DATA_DIR": str(settings.data_dir), "AIHUB_STOP_GRACE_SECONDS": "2", **env}
    if settings.database_url:
        environ["AIHUB_DATABASE_URL"] = settings.database_url
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aihub.cli",
        "serve",
        "--port",
        str(port),
        cwd=ROOT,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    server = ServeProcess(proc, f"http://127.0.0.1:{port}")
    try:
        await server.ready()
        yield server
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await server._reader


def free_port() -> int:
    with free_socket() as sock:
        return int(sock.getsockname()[1])


async def gql(url: str, query: str, variables: dict[str, Any] | None = None, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=30) as http:
        body = (
            await http.post(
                url + "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
            )
        ).json()
    assert not body.get("errors"), body
    return body["data"]


async def wait_node(url: str, token: str, run_id: str, node: str, status: str) -> None:
    from tests.graphql.harness import WsClient

    async with WsClient(url.replace("http", "ws") + "/graphql", {"token": token}) as ws:
        op = await ws.subscribe(RUN_EVENTS, {"id": run_id})
        async with asyncio.timeout(60):
            async for data in ws.results(op):
                event = data["runEvents"]
                if event["node"] == node and event["nodeStatus"] == status:
                    return


async def test_serve_first_start_graphiql_graceful_restart(settings: Settings, shared_dir: Path) -> None:
    port = free_port()
    gate = shared_dir / "gate"
    spec = {
        "name": "survivor",
        "nodes": [{"name": "a", "command": f"echo before; {gate_wait(gate)}; echo after"}],
    }
    async with serve(settings, port) as server:
        # the generated admin password is printed once
        printed = [line for line in server.output if "created user 'admin' with password:" in line]
        assert len(printed) == 1
        password = printed[0].rsplit(": ", 1)[1]
        token = (await gql(server.url, LOGIN, {"u": "admin", "p": password}))["login"]["token"]
        async with httpx.AsyncClient() as http:
            health = (await http.get(server.url + "/healthz")).json()
            page = await http.get(server.url + "/graphql", headers={"Accept": "text/html"})
        assert health["status"] == "ok" and health["executor"] == "local"
        assert page.status_code == 200 and "graphiql" in page.text.lower()
        version = await gql(
            server.url, "mutation($s: JSON!) { createWorkflow(spec: $s) { id } }", {"s": spec}, token
        )
        run_id = (
            await gql(
                server.url,
                "mutation($v: ID!) { createRun(versionId: $v) { id } }",
                {"v": version["createWorkflow"]["id"]},
                token,
            )
        )["createRun"]["id"]
        await wait_node(server.url, token, run_id, "a", "RUNNING")
        assert await server.terminate(), server.output
    gate.write_text("")  # the node was left running; it finishes while the server is down
    async with serve(settings, port) as server:
        assert not any("created user" in line for line in server.output)
        await wait_node(server.url, token, run_id, "a", "SUCCEEDED")
        run = await gql(
            server.url,
            "query($id: ID!) { run(id: $id) { status nodes { attempts { number } logs { text } } } }",
            {"id": run_id},
            token,
        )
        assert run["run"]["nodes"][0]["logs"]["text"] == "before\nafter\n"
        assert run["run"]["nodes"][0]["attempts"] == [{"number": 1}]
        assert await server.terminate(), server.output


async def test_serve_uses_the_configured_admin_password(settings: Settings) -> None:
    async with serve(settings, free_port(), AIHUB_ADMIN_PASSWORD="configured-pw-1") as server:
        await gql(server.url, LOGIN, {"u": "admin", "p": "configured-pw-1"})
        assert not any("password" in line for line in server.output)
        assert await server.terminate(), server.output


async def test_serve_sends_live_events_uncompressed(settings: Settings) -> None:
    """No per-message deflate, even for a client that offers it: each subscriber's socket compressed every live
    event again (aihub.server.SERVER_OPTIONS; docs/benchmarks.md, "API")."""
    import websockets

    async with serve(settings, free_port(), AIHUB_ADMIN_PASSWORD="configured-pw-1") as server:
        url = server.url.replace("http", "ws") + "/graphql"
        async with websockets.connect(
            url, subprotocols=["graphql-transport-ws"], compression="deflate"
        ) as ws:
            offered = ws.request.headers.get("Sec-WebSocket-Extensions", "")
            assert "permessage-deflate" in offered, offered  # the client did ask
            assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        assert await server.terminate(), server.output


@pytest.mark.usefixtures("users")
async def test_graphiql_in_a_browser_json_for_tools(users: Any) -> None:
    page = await users.http.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()
    response = await users.http.get(
        "/graphql",
        params={"query": "{ me { username } }"},
        headers={"Authorization": f"Bearer {users.tokens['alice']}"},
    )
    assert response.json() == {"data": {"me": {"username": "alice"}}}
