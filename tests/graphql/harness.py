"""Test harness for the API: a real uvicorn server in this process, an HTTP GraphQL helper and a minimal
``graphql-transport-ws`` client over the real ``websockets`` library. (Fixtures are in ``conftest.py``.)"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
import websockets
from starlette.applications import Starlette

from aihub.app import create_app
from aihub.db.models import User
from aihub.runtime import Runtime
from aihub.server import behind_proxies
from aihub.settings import Settings
from tests.polling import until

ADMIN_PASSWORD = "admin-password-1"
PASSWORD = "password-1234"
SUBPROTOCOL = "graphql-transport-ws"


class GraphQLErrors(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(e["message"] for e in errors))
        self.errors = errors

    @property
    def codes(self) -> list[str]:
        return [(e.get("extensions") or {}).get("code") for e in self.errors]

    @property
    def first(self) -> dict[str, Any]:
        return self.errors[0]


@dataclass
class Server:
    url: str
    app: Starlette
    settings: Settings
    http: httpx.AsyncClient
    tokens: dict[str, str] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)

    @property
    def rt(self) -> Runtime:
        return self.app.state.runtime  # type: ignore[no-any-return]

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/graphql"

    async def post(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        as_: str | None = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        """The raw JSON response of one GraphQL request (as user ``as_`` or with ``token``)."""
        headers = {}
        token = token or (self.tokens[as_] if as_ else None)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def gql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        as_: str | None = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        """``data`` of a request that must succeed; raises ``GraphQLErrors`` otherwise."""
        body = await self.post(query, variables, as_=as_, token=token)
        if body.get("errors"):
            raise GraphQLErrors(body["errors"])
        return body["data"]  # type: ignore[no-any-return]

    async def error(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        as_: str | None = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        """The single error of a request that must fail."""
        body = await self.post(query, variables, as_=as_, token=token)
        assert body.get("errors"), body
        assert len(body["errors"]) == 1, body["errors"]
        return body["errors"][0]  # type: ignore[no-any-return]

    def ws(self, token: str | None = None, *, payload: dict[str, Any] | None = None) -> WsClient:
        if payload is None:
            payload = {"Authorization": f"Bearer {token}"} if token else {}
        return WsClient(self.ws_url, payload)


class WsClient:
    """A minimal ``graphql-transport-ws`` client over the real ``websockets`` library."""

    def __init__(self, url: str, payload: dict[str, Any], **options: Any) -> None:
        self.url, self.payload, self.options = url, payload, options
        self._ids = itertools.count(1)
        self.conn: websockets.ClientConnection | None = None
        #: messages read while waiting for another operation's
        self._held: dict[str, list[dict[str, Any]]] = {}

    async def __aenter__(self) -> WsClient:
        self.conn = await websockets.connect(self.url, subprotocols=[SUBPROTOCOL], **self.options)
        await self.send({"type": "connection_init", "payload": self.payload})
        ack = await self.recv()
        assert ack["type"] == "connection_ack", ack
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.conn is not None
        await self.conn.close()

    async def send(self, message: dict[str, Any]) -> None:
        assert self.conn is not None
        await self.conn.send(json.dumps(message))

    async def recv(self, timeout: float = 30) -> dict[str, Any]:
        assert self.conn is not None
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await self.conn.recv())
                if message["type"] == "ping":
                    await self.send({"type": "pong"})
                    continue
                return message  # type: ignore[no-any-return]

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> str:
        op_id = str(next(self._ids))
        await self.send(
            {"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables or {}}}
        )
        return op_id

    async def results(self, op_id: str, timeout: float = 60) -> AsyncIterator[dict[str, Any]]:
        """``data`` of ``next`` messages for ``op_id`` until ``complete``; errors (``error`` messages, or
        ``next`` with errors) raise ``GraphQLErrors``."""
        while True:
            held = self._held.get(op_id)
            message = held.pop(0) if held else await self.recv(timeout)
            if message.get("id") != op_id:
                self._held.setdefault(message.get("id", ""), []).append(message)
                continue
            if message["type"] == "next":
                if message["payload"].get("errors"):
                    raise GraphQLErrors(message["payload"]["errors"])
                yield message["payload"]["data"]
            elif message["type"] == "error":
                raise GraphQLErrors(message["payload"])
            elif message["type"] == "complete":
                return


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


async def start_server(
    settings: Settings, **app_options: Any
) -> tuple[uvicorn.Server, asyncio.Task[None], Starlette]:
    sock = free_socket()  # uvicorn owns it once serving
    settings.host, settings.port = "127.0.0.1", sock.getsockname()[1]
    try:
        app = create_app(settings, **app_options)
    except BaseException:
        sock.close()
        raise
    config = uvicorn.Config(
        behind_proxies(app, settings),
        log_level="warning",
        lifespan="on",
        ws_max_size=1 << 24,
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await until(lambda: server.started or task.done(), what="the server to start")
    if task.done():
        sock.close()
        task.result()
        raise AssertionError("the server stopped during start-up")
    return server, task, app


async def stop_server(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    await asyncio.wait_for(task, 30)


LOGIN = "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token user { id } } }"


RUN_EVENTS = (
    "subscription($id: ID!) { runEvents(runId: $id) "
    "{ runId runStatus node nodeStatus retryCount attempt message snapshot } }"
)
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


async def wait_for(
    server: Server,
    run_id: str,
    *,
    run_status: set[str] | None = None,
    node: str | None = None,
    node_status: str | None = None,
    as_: str = "alice",
    timeout: float = 60,
) -> list[dict[str, Any]]:
    """Follow ``runEvents`` until the run reaches ``run_status`` (default: any terminal status), or ``node``
    reaches ``node_status``; returns every event received."""
    wanted = run_status or TERMINAL
    events: list[dict[str, Any]] = []
    async with server.ws(server.tokens[as_]) as ws:
        op = await ws.subscribe(RUN_EVENTS, {"id": run_id})
        async with asyncio.timeout(timeout):
            async for data in ws.results(op):
                event = data["runEvents"]
                events.append(event)
                if node is not None:
                    if event["node"] == node and event["nodeStatus"] == node_status:
                        return events
                elif event["node"] is None and event["runStatus"] in wanted:
                    return events
    raise AssertionError(f"run {run_id} events ended early: {events}")
