"""The CLI's client of a server: GraphQL over HTTP, subscriptions over ``graphql-transport-ws``.

Where the server is: ``AIHUB_URL``, else the URL saved by ``aihub login``. The token: ``AIHUB_TOKEN``, else the
one saved by ``aihub login`` in ``$AIHUB_CONFIG_DIR`` (default ``~/.config/aihub``), readable by its owner only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import websockets

from aihub.cli.login import config_dir, forget_login, save_login, saved_token, server_url
from aihub.cli.terminal import printable

__all__ = ["config_dir", "forget_login", "save_login", "saved_token", "server_url"]  # (aihub.cli.login's)

SUBPROTOCOL = "graphql-transport-ws"


class ClientError(Exception):
    """A request the server refused (``code``/``field`` from the GraphQL error) or could not be sent."""

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.field = message, code, field

    @classmethod
    def from_errors(cls, errors: list[dict[str, Any]]) -> ClientError:
        first = errors[0]
        extensions = first.get("extensions") or {}
        message = "; ".join(str(e.get("message")) for e in errors)
        return cls(message, code=extensions.get("code"), field=extensions.get("field"))


@dataclass
class Client:
    url: str
    token: str | None = None
    timeout: float = 60.0

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/graphql"

    async def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as http:
                response = await http.post(
                    self.url + "/graphql",
                    json={"query": query, "variables": variables or {}},
                    headers=headers,
                )
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach the server at {self.url}: {exc}", code="UNREACHABLE") from exc
        try:
            body = response.json()
        except ValueError:
            raise ClientError(
                f"the server at {self.url} answered HTTP {response.status_code}, not GraphQL", code="HTTP"
            ) from None
        if body.get("errors"):
            raise ClientError.from_errors(body["errors"])
        return body["data"]  # type: ignore[no-any-return]

    def connect(self) -> Subscriptions:
        return Subscriptions(self.ws_url, self.token)


class Subscriptions:
    """One websocket carrying any number of subscriptions; each is an async iterator of ``data``."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url, self.token = url, token
        self._ids = itertools.count(1)
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._conn: websockets.ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriptions:
        try:
            self._conn = await websockets.connect(self.url, subprotocols=[SUBPROTOCOL], max_size=1 << 24)
        except (OSError, websockets.WebSocketException) as exc:
            raise ClientError(f"cannot open a websocket to {self.url}: {exc}", code="UNREACHABLE") from exc
        await self._send({"type": "connection_init", "payload": {"token": self.token or ""}})
        try:
            ack = json.loads(await self._conn.recv())
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == 4403:
                raise ClientError("the token was refused; log in again", code="UNAUTHENTICATED") from exc
            raise ClientError(f"the server closed the websocket: {exc}", code="CLOSED") from exc
        if ack.get("type") != "connection_ack":
            raise ClientError(f"unexpected answer to connection_init: {ack}", code="PROTOCOL")
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._conn is not None:
            await self._conn.close()

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._conn is not None
        await self._conn.send(json.dumps(message))

    async def _read(self) -> None:
        assert self._conn is not None
        try:
            async for raw in self._conn:
                message = json.loads(raw)
                if message.get("type") == "ping":
                    await self._send({"type": "pong"})
                elif (queue := self._queues.get(message.get("id", ""))) is not None:
                    queue.put_nowait(message)
        except websockets.ConnectionClosed:
            pass
        closed = {"type": "closed"}
        for queue in self._queues.values():
            queue.put_nowait(closed)

    async def subscribe(
        self, query: str, variables: dict[str, Any] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        op_id = str(next(self._ids))
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._queues[op_id] = queue
        payload = {"query": query, "variables": variables or {}}
        await self._send({"id": op_id, "type": "subscribe", "payload": payload})
        finished = False
        try:
            while True:
                message = await queue.get()
                kind = message["type"]
                if kind == "next":
                    data = message["payload"]
                    if data.get("errors"):
                        raise ClientError.from_errors(data["errors"])
                    yield data["data"]
                    continue
                finished = True
                if kind == "error":
                    raise ClientError.from_errors(message["payload"])
                if kind == "complete":
                    return
                raise ClientError("the server closed the connection", code="CLOSED")
        finally:
            self._queues.pop(op_id, None)
            if not finished:  # the caller stopped early: end the operation on the server too
                with contextlib.suppress(websockets.ConnectionClosed):
                    await self._send({"id": op_id, "type": "complete"})


# ------------------------------------------------------------------------------------------------ commands
# Each returns the process exit code: 0 success, 1 a failed run or an unreachable server, 2 a refused request.

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
RUN_FIELDS = "id name status retryCount message version { number workflow { name } } nodes { name }"

LOGIN = "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token user { username } } }"
SUBMIT = "mutation($spec: JSON!) { submitWorkflow(spec: $spec) { id number workflow { name } } }"
CREATE_RUN = (
    "mutation($v: ID!, $name: String, $params: JSON, $cache: Boolean!) {"
    " createRun(versionId: $v, name: $name, params: $params, useCache: $cache) { " + RUN_FIELDS + " } }"
)
RUN_EVENTS = (
    "subscription($id: ID!) { runEvents(runId: $id) "
    "{ runStatus node nodeStatus retryCount attempt message snapshot } }"
)
NODE_LOGS = (
    "subscription($id: ID!, $node: String!, $attempt: Int) "
    "{ nodeLogs(runId: $id, node: $node, attempt: $attempt) { text } }"
)
LOG_CHUNK = (
    "query($id: ID!, $node: String!, $attempt: Int, $offset: Int!, $limit: Int!) { run(id: $id) { "
    "node(name: $node) { attempt logs(attempt: $attempt, offset: $offset, limit: $limit) "
    "{ attempt text nextOffset size } } } }"
)
FAILED_NODES = "query($id: ID!) { run(id: $id) { nodes { name status message attempt } } }"
RUNS = (
    "query($status: [RunStatus!], $wf: ID, $owner: String, $first: Int!) {"
    " runs(status: $status, workflowId: $wf, owner: $owner, first: $first) { items {"
    " id name status retryCount createdAt owner { username } version { number workflow { name } } } } }"
)
STOP = "mutation($id: ID!) { stopRun(id: $id) { " + RUN_FIELDS + " } }"
RETRY = "mutation($id: ID!, $from: String) { retryRun(id: $id, fromNode: $from) { " + RUN_FIELDS + " } }"
COPY = (
    "mutation($id: ID!, $name: String, $params: JSON) {"
    " copyRun(id: $id, name: $name, params: $params) { " + RUN_FIELDS + " } }"
)


def connected_client(*, needs_token: bool = True) -> Client:
    url = server_url()
    if url is None:
        raise ClientError("no server configured: set AIHUB_URL or run `aihub login --url URL`", code="CONFIG")
    token = saved_token()
    if needs_token and not token:
        raise ClientError("not logged in: set AIHUB_TOKEN or run `aihub login`", code="UNAUTHENTICATED")
    return Client(url, token)


def exit_code(error: ClientError) -> int:
    return 2 if error.code in ("INVALID_INPUT", "NOT_FOUND", "CONFLICT", "FORBIDDEN", "BAD_REQUEST") else 1


def describe_run(run: dict[str, Any]) -> str:
    version = run["version"]
    return f"run {run['id']} '{run['name']}' of {version['workflow']['name']} v{version['number']}: {run['status']}"


async def login(url: str, username: str, password: str) -> tuple[str, Path]:
    data = await Client(url.rstrip("/")).execute(LOGIN, {"u": username, "p": password})
    token = data["login"]["token"]
    return token, save_login(url.rstrip("/"), token)


async def logout() -> None:
    client = connected_client()
    with contextlib.suppress(ClientError):
        await client.execute("mutation { logout }")
    forget_login()


async def submit_run(
    client: Client, source: str, *, params: dict[str, str], name: str | None, use_cache: bool
) -> dict[str, Any]:
    version = (await client.execute(SUBMIT, {"spec": source}))["submitWorkflow"]
    variables = {"v": version["id"], "name": name, "params": params, "cache": use_cache}
    return (await client.execute(CREATE_RUN, variables))["createRun"]  # type: ignore[no-any-return]


async def follow_run(client: Client, run: dict[str, Any], printer: Any) -> str:
    """Print status changes and every attempt's log lines until the run ends; returns its final status."""
    from aihub.bus.base import RunEvent

    run_id, node_count = run["id"], len(run["nodes"])
    followers: set[asyncio.Task[None]] = set()
    followed: set[tuple[str, int]] = set()
    snapshot_left = 1 + node_count
    status = run["status"]
    async with client.connect() as subs:
        try:
            async for data in subs.subscribe(RUN_EVENTS, {"id": run_id}):
                ev = data["runEvents"]
                snapshot_left -= 1 if ev["snapshot"] else 0
                status = ev["runStatus"]
                if not (ev["snapshot"] and ev["nodeStatus"] == "WAITING"):
                    printer.status(
                        RunEvent(
                            int(run_id),
                            status,
                            ev["node"],
                            ev["nodeStatus"],
                            ev["retryCount"],
                            ev["attempt"],
                            ev["message"] or "",
                        )
                    )
                key = (ev["node"], ev["attempt"] or 0)
                if ev["node"] and key[1] and ev["nodeStatus"] != "WAITING" and key not in followed:
                    followed.add(key)
                    task = asyncio.create_task(_print_logs(subs, run_id, key[0], key[1], printer))
                    followers.add(task)
                if status in TERMINAL and snapshot_left <= 0:
                    break
            await asyncio.gather(*followers)
        finally:
            for task in followers:
                task.cancel()
    return status  # type: ignore[no-any-return]


async def _print_logs(subs: Subscriptions, run_id: str, node: str, attempt: int, printer: Any) -> None:
    async for data in subs.subscribe(NODE_LOGS, {"id": run_id, "node": node, "attempt": attempt}):
        printer.log(node, printable(data["nodeLogs"]["text"]))


async def report_failure(client: Client, run_id: str, printer: Any, lines: int = 20) -> None:
    nodes = (await client.execute(FAILED_NODES, {"id": run_id}))["run"]["nodes"]
    for node in nodes:
        if node["status"] != "FAILED":
            continue
        printer.line(f"node {node['name']} failed: {node['message']}")
        tail = await tail_log(client, run_id, node["name"], node["attempt"], lines)
        if tail:
            printer.line(f"last {len(tail)} log lines of {node['name']} (attempt {node['attempt']}):")
            for text in tail:
                printer.line(f"  {printable(text)}")


async def _log_chunk(
    client: Client, run_id: str, node: str, attempt: int | None, offset: int, limit: int
) -> Any:
    variables = {"id": run_id, "node": node, "attempt": attempt, "offset": offset, "limit": limit}
    run = (await client.execute(LOG_CHUNK, variables))["run"]
    if run is None or run["node"] is None:
        raise ClientError(
            f"run {run_id} has no node {node!r}" if run else f"run {run_id} not found", code="NOT_FOUND"
        )
    return run["node"]["logs"]


async def tail_log(client: Client, run_id: str, node: str, attempt: int, lines: int) -> list[str]:
    size = (await _log_chunk(client, run_id, node, attempt, 0, 1))["size"]
    chunk = await _log_chunk(client, run_id, node, attempt, max(0, size - 65536), 65536)
    return chunk["text"].splitlines()[-lines:]


async def print_log(client: Client, run_id: str, node: str, attempt: int | None, out: Any) -> None:
    offset = 0
    while True:
        chunk = await _log_chunk(client, run_id, node, attempt, offset, 1 << 20)
        out.write(printable(chunk["text"]))
        offset = chunk["nextOffset"]
        if offset >= chunk["size"] or not chunk["text"]:
            break
    out.flush()


async def follow_log(client: Client, run_id: str, node: str, attempt: int | None, out: Any) -> None:
    async with client.connect() as subs:
        async for data in subs.subscribe(NODE_LOGS, {"id": run_id, "node": node, "attempt": attempt}):
            out.write(printable(data["nodeLogs"]["text"]) + "\n")
            out.flush()


async def list_runs(
    client: Client, *, status: list[str], workflow: str | None, owner: str | None, first: int
) -> list[dict[str, Any]]:
    variables = {"status": status or None, "wf": workflow, "owner": owner, "first": first}
    return (await client.execute(RUNS, variables))["runs"]["items"]  # type: ignore[no-any-return]


def format_runs(runs: list[dict[str, Any]]) -> list[str]:
    rows = [("ID", "NAME", "STATUS", "WORKFLOW", "OWNER", "CREATED")]
    for r in runs:
        status = r["status"] + (f" ({r['retryCount']})" if r["retryCount"] else "")
        workflow = f"{r['version']['workflow']['name']} v{r['version']['number']}"
        owner = (r.get("owner") or {}).get("username", "")
        rows.append((r["id"], r["name"], status, workflow, owner, r["createdAt"][:19].replace("T", " ")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


async def run_action(client: Client, action: str, run_id: str, **extra: Any) -> dict[str, Any]:
    query, field = {"stop": (STOP, "stopRun"), "retry": (RETRY, "retryRun"), "copy": (COPY, "copyRun")}[
        action
    ]
    return (await client.execute(query, {"id": run_id, **extra}))[field]  # type: ignore[no-any-return]
