"""SIGTERM (issue 20), what Kubernetes sends at every rollout, to ``aihub serve`` processes on PostgreSQL and Kafka.

- A worker stops following its runs and leaves the engine group at once; its running nodes keep running, and the
  worker started again re-attaches them: the run finishes, each node ran once, no log line is lost.
- An API replica ends its live streams so that clients reconnect: the run page's SSE stream simply ends (the
  browser's EventSource reconnects after the ``retry`` it was given and gets a fresh snapshot), a log tail ends
  with a note, a GraphQL WebSocket is closed with 1012 (service restart).
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from aihub.settings import Settings
from tests.conftest import NewDatabaseUrl
from tests.graphql.harness import LOGIN, WsClient
from tests.graphql.test_server import free_port, gql, serve, wait_node
from tests.kafka.test_roles import PASSWORD, _env
from tests.polling import gate_wait

RUN_EVENTS = "subscription($id: ID!) { runEvents(runId: $id) { node nodeStatus runStatus } }"


def _gated_spec(name: str, gate: Path, starts: Path) -> dict[str, Any]:
    """``a`` runs until ``gate`` exists, then ``b``; each start of a node is one line in ``starts``."""
    return {
        "name": name,
        "nodes": [
            {
                "name": "a",
                "command": f'echo a >> "{starts}"; echo before; ' + gate_wait(gate) + "; echo after",
            },
            {"name": "b", "depends_on": ["a"], "command": f'echo b >> "{starts}"; echo from-b'},
        ],
    }


async def _start_run(url: str, token: str, spec: dict[str, Any]) -> str:
    version = await gql(url, "mutation($s: JSON!) { createWorkflow(spec: $s) { id } }", {"s": spec}, token)
    run = await gql(
        url,
        "mutation($v: ID!) { createRun(versionId: $v) { id } }",
        {"v": version["createWorkflow"]["id"]},
        token,
    )
    return str(run["createRun"]["id"])


async def test_sigterm_to_a_worker_mid_run_then_start_it_again(
    host_dir: Path, new_database_url: NewDatabaseUrl, tansu: str, prefix: str
) -> None:
    settings = Settings(data_dir=host_dir / "data", database_url=await new_database_url("postgres"))
    # a session timeout far beyond the test's deadlines: the run can only be taken over in time because the
    # stopped worker left the group instead of waiting to be noticed as dead
    env = {**_env(tansu, prefix), "AIHUB_KAFKA_SESSION_TIMEOUT_MS": "30000"}
    gate, starts = host_dir / "gate", host_dir / "starts"
    async with serve(settings, free_port(), AIHUB_ROLE="api", **env) as api:
        token = (await gql(api.url, LOGIN, {"u": "admin", "p": PASSWORD}))["login"]["token"]
        worker_port = free_port()
        async with serve(settings, worker_port, AIHUB_ROLE="worker", **env) as worker:
            run_id = await _start_run(api.url, token, _gated_spec("sigterm-worker", gate, starts))
            try:
                await wait_node(api.url, token, run_id, "a", "RUNNING")
            except TimeoutError:
                raise AssertionError("\n".join(worker.output)) from None
            assert await worker.terminate(), worker.output
        assert any("LeaveGroup request succeeded" in line for line in worker.output), "\n".join(worker.output)
        # the node was left running: it goes on while no worker runs
        assert starts.read_text() == "a\n"
        status = await gql(api.url, "query($id: ID!) { run(id: $id) { status } }", {"id": run_id}, token)
        assert status["run"]["status"] == "RUNNING"

        async with serve(settings, worker_port, AIHUB_ROLE="worker", **env) as again:
            gate.write_text("")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 25  # less than the session timeout
            query = (
                "query($id: ID!) { run(id: $id) { status nodes { name attempts { number } logs { text } } } }"
            )
            while True:
                run = (await gql(api.url, query, {"id": run_id}, token))["run"]
                if run["status"] in ("SUCCEEDED", "FAILED", "STOPPED"):
                    break
                assert loop.time() < deadline, f"the run did not finish: {run}\n{again.output[-30:]}"
                await asyncio.sleep(0.2)
            assert run["status"] == "SUCCEEDED", (run, again.output[-30:])
            nodes = {node["name"]: node for node in run["nodes"]}
            # no node ran twice, nothing was lost
            assert starts.read_text() == "a\nb\n"
            assert {name: node["attempts"] for name, node in nodes.items()} == {
                "a": [{"number": 1}],
                "b": [{"number": 1}],
            }
            assert nodes["a"]["logs"]["text"] == "before\nafter\n"
            assert nodes["b"]["logs"]["text"] == "from-b\n"
            assert await again.terminate(), again.output
        assert await api.terminate(), api.output


def _web_login(client: httpx.Client) -> None:
    client.get("/login")
    csrf = client.cookies["aihub_csrf"]
    response = client.post(
        "/login", data={"csrf_token": csrf, "username": "admin", "password": PASSWORD, "next": "/"}
    )
    assert response.status_code == 303, response.text


async def test_sigterm_to_an_api_replica_ends_live_streams_reconnectably(
    host_dir: Path, new_database_url: NewDatabaseUrl, tansu: str, prefix: str
) -> None:
    settings = Settings(data_dir=host_dir / "data", database_url=await new_database_url("postgres"))
    env = _env(tansu, prefix)
    gate, starts = host_dir / "gate", host_dir / "starts"
    async with (
        serve(settings, free_port(), AIHUB_ROLE="worker", **env) as worker,
        serve(settings, free_port(), AIHUB_ROLE="api", **env) as api,
    ):
        token = (await gql(api.url, LOGIN, {"u": "admin", "p": PASSWORD}))["login"]["token"]
        run_id = await _start_run(api.url, token, _gated_spec("sigterm-api", gate, starts))
        await wait_node(api.url, token, run_id, "a", "RUNNING")

        run_ready, tail_ready = threading.Event(), threading.Event()

        def read(path: str, ready: threading.Event, ready_line: str) -> list[str]:
            """``path``'s event stream, line by line, until the server ends it; ``ready`` once ``ready_line``
            came."""
            with httpx.Client(base_url=api.url, timeout=60) as client:
                _web_login(client)
                lines = []
                with client.stream("GET", path) as stream:
                    for line in stream.iter_lines():
                        lines.append(line)
                        if line == ready_line:
                            ready.set()
                return lines

        readers = asyncio.gather(
            asyncio.to_thread(read, f"/runs/{run_id}/live", run_ready, "event: synced"),
            asyncio.to_thread(
                read, f"/runs/{run_id}/nodes/a/logs/1/live", tail_ready, 'data: <div class="l">before</div>'
            ),
        )
        async with WsClient(api.url.replace("http", "ws") + "/graphql", {"token": token}) as ws:
            op = await ws.subscribe(RUN_EVENTS, {"id": run_id})
            first = await ws.recv()
            assert first["id"] == op and first["type"] == "next", first
            for ready in (run_ready, tail_ready):
                assert await asyncio.to_thread(ready.wait, 60), "a live stream did not start"
            assert await api.terminate(), api.output
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012, closed.value
        runs, logs = await asyncio.wait_for(readers, 30)
        # the run stream told the browser how soon to come back, and ended without an error event
        assert runs[0] == "retry: 2000" and "event: synced" in runs, runs
        assert "event: end" not in runs
        # the log tail: its lines so far, a note, and the end
        assert 'data: <div class="l">before</div>' in logs, logs
        assert any("the server is restarting" in line for line in logs), logs
        assert "event: end" in logs, logs
        # nothing else stopped: the worker still drives the run
        gate.write_text("")
        async with serve(settings, free_port(), AIHUB_ROLE="api", **env) as api2:
            await wait_node(api2.url, token, run_id, "b", "SUCCEEDED")
            assert await api2.terminate(), api2.output
        assert await worker.terminate(), worker.output


async def test_sigterm_lets_a_request_in_flight_finish(settings: Settings) -> None:
    """A GraphQL request whose body is still arriving when SIGTERM comes is answered; new connections are
    refused meanwhile. ``Expect: 100-continue`` tells the test when the application has begun reading it."""
    query = json.dumps({"query": "{ __typename }"}).encode()
    async with serve(settings, free_port(), AIHUB_ADMIN_PASSWORD=PASSWORD) as server:
        port = int(server.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            "POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(query)}\r\nExpect: 100-continue\r\n\r\n"
        )
        writer.write(head.encode())
        await writer.drain()
        async with asyncio.timeout(30):
            assert (await reader.readline()).startswith(b"HTTP/1.1 100"), "the app did not start reading"
            await reader.readline()  # the blank line after the interim response
        server.proc.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not any("Waiting for connections to close" in line for line in server.output):
            assert loop.time() < deadline, server.output
            await asyncio.sleep(0.05)
        with pytest.raises(OSError):  # no new connections
            await asyncio.open_connection("127.0.0.1", port)
        writer.write(query)
        await writer.drain()
        async with asyncio.timeout(30):
            status = await reader.readline()
            response = await reader.read()
        writer.close()
        assert status.startswith(b"HTTP/1.1 200"), status + response
        assert b'"__typename":"Query"' in response.replace(b" ", b""), response
        async with asyncio.timeout(30):
            code = await server.proc.wait()
        assert code in (0, -signal.SIGTERM), server.output
        assert any("Application shutdown complete" in line for line in server.output), server.output
