"""API benchmark (issue 4, point 7): the GraphQL API against plain baselines in the same process.

Run from the repository root: ``.venv/bin/python bench/api.py [--quick]``. ``AIHUB_DATABASE_URL`` selects the
database (default: SQLite in a fresh data dir under /var/tmp). docs/benchmarks.md ("API") holds the figures.

- **run detail**: the run-detail query of a 1,000-node run (every node with its inputs, outputs, attempts and
  events) through the real HTTP endpoint, against building the same JSON straight from the database (the
  same rows, a handful of queries, ``json.dumps``). Median of several requests each; ratio.
- **status query**: requests per second of ``run(id) { status }`` (bearer token, real auth lookup) from a
  uvicorn child process, against a plain Starlette JSON route in a child process serving the same dict. The
  load comes from this process: 16 keep-alive connections of a minimal HTTP/1.1 client (httpx itself would
  be the bottleneck of the plain route); ratio.
- **fan-out**: 200 websocket subscribers (``runEvents``, over ``graphql-transport-ws``) on one run of 200
  nodes; 402 status events (each node RUNNING then SUCCEEDED, plus the run's) published on the bus at a steady
  pace. Every event must reach every subscriber; latency = receive time - publish time (carried in the
  event's message); server CPU = this process's CPU time while the events flow. The baseline is a raw
  Starlette websocket endpoint that sends the very same ``next`` messages from a per-connection queue. The
  subscribers run in 4 child processes, so their CPU is not counted as the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import platform
import pstats
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
import websockets  # noqa: E402
from scratch_app import scratch_database  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route, WebSocketRoute  # noqa: E402
from starlette.websockets import WebSocket, WebSocketDisconnect  # noqa: E402

from aihub.app import create_app  # noqa: E402
from aihub.bus.base import RunEvent  # noqa: E402
from aihub.db.models import Attempt, NodeEvent, NodeRun, Run, TokenKind, User, Workflow, WorkflowVersion  # noqa: E402
from aihub.db.setup import close_db, init_db, migrate  # noqa: E402
from aihub.domain.status import NodeStatus, RunStatus  # noqa: E402
from aihub.server import SERVER_OPTIONS  # noqa: E402
from aihub.services.runs import create_run  # noqa: E402
from aihub.services.tokens import issue_token  # noqa: E402
from aihub.services.users import create_user  # noqa: E402
from aihub.services.workflows import create_workflow  # noqa: E402
from aihub.settings import Settings  # noqa: E402

SUBPROTOCOL = "graphql-transport-ws"
RUN_DETAIL = """query($id: ID!) { run(id: $id) {
  id name status params retryCount createdAt startedAt finishedAt
  owner { username } version { number workflow { name } }
  nodes { name status retryCount attempt inputs message exitCode startedAt finishedAt
    outputs { name type value } attempts { number status exitCode message startedAt finishedAt }
    events { kind message attempt } }
} }"""
STATUS = "query($id: ID!) { run(id: $id) { status } }"
RUN_EVENTS = (
    "subscription($id: ID!) { runEvents(runId: $id) { runStatus node nodeStatus retryCount message } }"
)


class NullBus:
    async def publish(self, event: RunEvent) -> None:
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def layered(nodes: int, name: str) -> dict[str, Any]:
    """10 layers; node i of a layer depends on node i of the previous one; a text input from it."""
    width = max(1, nodes // 10)
    spec_nodes = []
    for i in range(nodes):
        node: dict[str, Any] = {"name": f"n{i}", "command": "echo ok > /tmp/workflow_space/o"}
        node["outputs"] = [{"name": "o", "path": "/tmp/workflow_space/o", "type": "text"}]
        if i >= width:
            node["inputs"] = [{"name": "x", "from": f"n{i - width}.o"}]
        spec_nodes.append(node)
    return {"name": name, "nodes": spec_nodes}


async def finished_run(user: User, nodes: int, name: str) -> Run:
    """A SUCCEEDED run whose nodes each have inputs, a text output, one attempt and three events."""
    version = await create_workflow(user, layered(nodes, name))
    run = await create_run(NullBus(), user, version.id)  # type: ignore[arg-type]
    rows = await NodeRun.filter(run_id=run.id)
    for row in rows:
        row.status, row.attempt, row.exit_code, row.message = NodeStatus.SUCCEEDED, 1, 0, "exited with code 0"
        row.inputs = {"x": "ok"} if int(row.name[1:]) >= max(1, nodes // 10) else {}
        row.outputs = {"o": {"type": "text", "value": "ok", "digest": None, "size": 2}}
    await NodeRun.bulk_update(
        rows, fields=["status", "attempt", "exit_code", "message", "inputs", "outputs"], batch_size=500
    )
    await Attempt.bulk_create(
        [
            Attempt(
                node_run_id=r.id,
                number=1,
                status=NodeStatus.SUCCEEDED,
                exit_code=0,
                message="exited with code 0",
            )
            for r in rows
        ],
        batch_size=500,
    )
    await NodeEvent.bulk_create(
        [
            NodeEvent(run_id=run.id, node=r.name, attempt=1, kind=kind, message=kind)
            for r in rows
            for kind in ("started", "exited", "output_stored")
        ],
        batch_size=1000,
    )
    await Run.filter(id=run.id).update(status=RunStatus.SUCCEEDED)
    return run


async def prepare(settings: Settings, detail_nodes: int) -> dict[str, Any]:
    await migrate(settings)
    await init_db(settings)
    try:
        user = await create_user("bench", "bench-password")
        token, _ = await issue_token(user.id, TokenKind.SESSION)
        detail = await finished_run(user, detail_nodes, "detail")
        fanout = await finished_run(user, 200, "fanout")
        await Run.filter(id=fanout.id).update(status=RunStatus.RUNNING)
        return {"token": token, "detail_run": detail.id, "fanout_run": fanout.id}
    finally:
        await close_db()


# ------------------------------------------------------------------------------------------------ servers


@asynccontextmanager
async def serving(app: Any, port: int) -> AsyncIterator[uvicorn.Server]:
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", access_log=False, **SERVER_OPTIONS
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        await task


def plain_app(body: dict[str, Any]) -> Starlette:
    async def handler(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse(body)

    return Starlette(routes=[Route("/graphql", handler, methods=["POST"])])


class RawBroadcast:
    """The fan-out baseline: a websocket endpoint that forwards pre-built ``next`` messages from a queue."""

    def __init__(self) -> None:
        self.queues: set[asyncio.Queue[str | None]] = set()

    async def endpoint(self, ws: WebSocket) -> None:
        await ws.accept(subprotocol=SUBPROTOCOL)
        await ws.receive_text()  # connection_init
        await ws.send_text('{"type":"connection_ack"}')
        op = json.loads(await ws.receive_text())["id"]
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.queues.add(queue)
        ready = {
            "runStatus": "RUNNING",
            "node": None,
            "nodeStatus": None,
            "retryCount": 0,
            "message": "ready",
        }
        await ws.send_text(json.dumps({"id": op, "type": "next", "payload": {"data": {"runEvents": ready}}}))
        try:
            while (text := await queue.get()) is not None:
                await ws.send_text(text.replace('"id":"?"', f'"id":"{op}"', 1))
        except WebSocketDisconnect:
            pass
        finally:
            self.queues.discard(queue)

    def publish(self, event: dict[str, Any]) -> None:
        text = json.dumps(
            {"id": "?", "type": "next", "payload": {"data": {"runEvents": event}}}, separators=(",", ":")
        )
        for queue in self.queues:
            queue.put_nowait(text)

    def app(self) -> Starlette:
        return Starlette(routes=[WebSocketRoute("/graphql", self.endpoint)])


def serve_child(kind: str, port: int, data_dir: str, database_url: str) -> None:
    """Entry point of the child processes of the status-query benchmark."""
    if kind == "graphql":
        app = create_app(Settings(data_dir=Path(data_dir), database_url=database_url), run_engine=False)
    else:
        app = plain_app({"data": {"run": {"status": "SUCCEEDED"}}})
    options = {**SERVER_OPTIONS, **({"loop": "uvloop"} if os.environ.get("BENCH_UVLOOP") else {})}
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, **options)


# ------------------------------------------------------------------------------------------------ part 1


def detail_json(
    run: Run,
    version: WorkflowVersion,
    workflow: Workflow,
    owner: User,
    nodes: list[NodeRun],
    attempts: dict[int, list[Attempt]],
    events: dict[str, list[NodeEvent]],
) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value else None

    return {
        "data": {
            "run": {
                "id": str(run.id),
                "name": run.name,
                "status": run.status.value,
                "params": run.params,
                "retryCount": run.retry_count,
                "createdAt": iso(run.created_at),
                "startedAt": iso(run.started_at),
                "finishedAt": iso(run.finished_at),
                "owner": {"username": owner.username},
                "version": {"number": version.number, "workflow": {"name": workflow.name}},
                "nodes": [
                    {
                        "name": n.name,
                        "status": n.status.value,
                        "retryCount": n.retry_count,
                        "attempt": n.attempt,
                        "inputs": n.inputs,
                        "message": n.message,
                        "exitCode": n.exit_code,
                        "startedAt": iso(n.started_at),
                        "finishedAt": iso(n.finished_at),
                        "outputs": [
                            {"name": k, "type": v["type"], "value": v["value"]} for k, v in n.outputs.items()
                        ],
                        "attempts": [
                            {
                                "number": a.number,
                                "status": a.status.value,
                                "exitCode": a.exit_code,
                                "message": a.message,
                                "startedAt": iso(a.started_at),
                                "finishedAt": iso(a.finished_at),
                            }
                            for a in attempts.get(n.id, [])
                        ],
                        "events": [
                            {"kind": e.kind, "message": e.message, "attempt": e.attempt}
                            for e in events.get(n.name, [])
                        ],
                    }
                    for n in nodes
                ],
            }
        }
    }


async def detail_from_database(run_id: int) -> bytes:
    """The baseline: the same document straight from the rows (no GraphQL, no HTTP)."""
    run = await Run.get(id=run_id)
    version = await WorkflowVersion.get(id=run.version_id)  # type: ignore[attr-defined]
    workflow = await Workflow.get(id=run.workflow_id)  # type: ignore[attr-defined]
    owner = await User.get(id=run.owner_id)  # type: ignore[attr-defined]
    nodes = await NodeRun.filter(run_id=run_id).order_by("id")
    attempts: dict[int, list[Attempt]] = {}
    for a in await Attempt.filter(node_run__run_id=run_id).order_by("number"):
        attempts.setdefault(a.node_run_id, []).append(a)  # type: ignore[attr-defined]
    events: dict[str, list[NodeEvent]] = {}
    for e in await NodeEvent.filter(run_id=run_id).order_by("id"):
        events.setdefault(e.node or "", []).append(e)
    return json.dumps(detail_json(run, version, workflow, owner, nodes, attempts, events)).encode()


async def bench_detail(
    settings: Settings, ids: dict[str, Any], repeat: int, profile: cProfile.Profile | None = None
) -> dict[str, Any]:
    port = free_port()
    app = create_app(settings, run_engine=False)
    async with (
        serving(app, port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=300) as http,
    ):
        headers = {"Authorization": f"Bearer {ids['token']}"}
        payload = {"query": RUN_DETAIL, "variables": {"id": ids["detail_run"]}}
        graphql_times, size = [], 0
        for i in range(repeat + 1):  # the first request warms caches up; it is not counted
            if profile and i == 1:
                profile.enable()
            start = time.perf_counter()
            response = await http.post("/graphql", json=payload, headers=headers)
            graphql_times.append(time.perf_counter() - start)
            body = response.json()
            assert "errors" not in body, body
            size = len(response.content)
        if profile:
            profile.disable()
        baseline_times = []
        for _ in range(repeat + 1):
            start = time.perf_counter()
            document = await detail_from_database(ids["detail_run"])
            baseline_times.append(time.perf_counter() - start)
        same = json.loads(document) == body
    graphql, baseline = statistics.median(graphql_times[1:]), statistics.median(baseline_times[1:])
    return {
        "nodes": len(body["data"]["run"]["nodes"]),
        "graphql_ms": graphql * 1000,
        "baseline_ms": baseline * 1000,
        "ratio": graphql / baseline,
        "bytes": size,
        "same_json": same,
    }


# ------------------------------------------------------------------------------------------------ part 2


async def hammer(port: int, body: bytes, token: str, seconds: float, connections: int) -> tuple[int, bytes]:
    request = (
        f"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    count = 0
    sample = b""
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal count, sample
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                match = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
                assert match and head.startswith(b"HTTP/1.1 200"), head
                sample = await reader.readexactly(int(match.group(1)))
                count += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return count, sample


async def wait_http(port: int) -> None:
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


async def bench_status(settings: Settings, ids: dict[str, Any], seconds: float) -> dict[str, Any]:
    body = json.dumps({"query": STATUS, "variables": {"id": ids["detail_run"]}}).encode()
    results = {}
    for kind in ("graphql", "plain"):
        port = free_port()
        child = subprocess.Popen(  # noqa: ASYNC220 - started once, outside the measured part
            [
                sys.executable,
                __file__,
                "--serve",
                kind,
                str(port),
                str(settings.data_dir),
                settings.resolved_database_url,
            ]
        )
        try:
            await wait_http(port)
            await hammer(port, body, ids["token"], 1.0, 16)  # warm-up
            cpu = process_cpu(child.pid)
            count, sample = await hammer(port, body, ids["token"], seconds, 16)
            cpu = process_cpu(child.pid) - cpu
            assert json.loads(sample) == {"data": {"run": {"status": "SUCCEEDED"}}}, sample
            results[kind] = count / seconds
            results[f"{kind}_cpu_us"] = cpu / count * 1e6
        finally:
            child.terminate()
            child.wait()
    return {
        "graphql_rps": results["graphql"],
        "plain_rps": results["plain"],
        "ratio": results["graphql"] / results["plain"],
        "graphql_cpu_us": results["graphql_cpu_us"],
        "plain_cpu_us": results["plain_cpu_us"],
    }


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------------ part 3


async def subscriber_child(url: str, token: str, run_id: str, count: int, snapshot: int, done: str) -> None:
    """Entry point of a fan-out client process: ``count`` subscribers; prints "ready", then a JSON summary."""
    latencies: list[float] = []
    received = 0
    ready = asyncio.Event()
    subscribed = 0

    async def one() -> None:
        nonlocal received, subscribed
        async with websockets.connect(url, subprotocols=[SUBPROTOCOL], max_size=1 << 24) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(
                json.dumps(
                    {
                        "id": "1",
                        "type": "subscribe",
                        "payload": {"query": RUN_EVENTS, "variables": {"id": run_id}},
                    }
                )
            )
            for _ in range(snapshot):
                await ws.recv()
            subscribed += 1
            if subscribed == count:
                ready.set()
            async for raw in ws:
                now = time.time()
                event = json.loads(raw)["payload"]["data"]["runEvents"]
                received += 1
                latencies.append(now - float(event["message"].split("=", 1)[1]))
                if event["message"].startswith(done):
                    return

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    await ready.wait()
    print("ready", flush=True)
    await asyncio.gather(*tasks)
    latencies.sort()
    print(json.dumps({"received": received, "latencies": latencies}), flush=True)


async def fan_out(
    url: str,
    token: str,
    run_id: int,
    snapshot: int,
    publish: Any,
    *,
    subscribers: int,
    interval: float,
    nodes: list[str],
    profile: cProfile.Profile | None = None,
) -> dict[str, Any]:
    children = []
    per_child = subscribers // 4
    for _ in range(4):
        children.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--subscribe",
                url,
                token,
                str(run_id),
                str(per_child),
                str(snapshot),
                stdout=asyncio.subprocess.PIPE,
            )
        )
    for child in children:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 300)
        assert line.strip() == b"ready", line
    events = [("RUNNING", None, None)]
    events += [("RUNNING", n, s) for n in nodes for s in ("RUNNING", "SUCCEEDED")]
    events.append(("SUCCEEDED", None, None))
    if profile:
        profile.enable()
    cpu, wall = time.process_time(), time.perf_counter()
    for i, (run_status, node, node_status) in enumerate(events):
        tag = "done" if i == len(events) - 1 else "t"
        await publish(run_status, node, node_status, f"{tag}={time.time()}")
        await asyncio.sleep(interval)
    outputs = [await child.communicate() for child in children]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if profile:
        profile.disable()
    summaries = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs]
    latencies = sorted(x for s in summaries for x in s["latencies"])
    received = sum(s["received"] for s in summaries)
    return {
        "subscribers": per_child * 4,
        "events": len(events),
        "expected": per_child * 4 * len(events),
        "delivered": received,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "max_ms": latencies[-1] * 1000,
        "server_cpu_s": cpu,
        "wall_s": wall,
    }


async def bench_fanout(
    settings: Settings, ids: dict[str, Any], interval: float, profile: cProfile.Profile | None = None
) -> dict[str, Any]:
    port = free_port()
    app = create_app(settings, run_engine=False)
    async with serving(app, port):
        rt = app.state.runtime
        run_id = ids["fanout_run"]
        nodes = [n.name for n in await NodeRun.filter(run_id=run_id).order_by("id")]

        async def publish_graphql(
            run_status: str, node: str | None, node_status: str | None, message: str
        ) -> None:
            await rt.bus.publish(
                RunEvent(run_id, run_status, node, node_status, 0, 1 if node else None, message)
            )

        graphql = await fan_out(
            f"ws://127.0.0.1:{port}/graphql",
            ids["token"],
            run_id,
            1 + len(nodes),
            publish_graphql,
            subscribers=200,
            interval=interval,
            nodes=nodes,
            profile=profile,
        )
    raw = RawBroadcast()
    port = free_port()
    async with serving(raw.app(), port):

        async def publish_raw(
            run_status: str, node: str | None, node_status: str | None, message: str
        ) -> None:
            raw.publish(
                {
                    "runStatus": run_status,
                    "node": node,
                    "nodeStatus": node_status,
                    "retryCount": 0,
                    "message": message,
                }
            )

        baseline = await fan_out(
            f"ws://127.0.0.1:{port}/graphql",
            ids["token"],
            run_id,
            1,
            publish_raw,
            subscribers=200,
            interval=interval,
            nodes=nodes,
        )
        for queue in raw.queues:
            queue.put_nowait(None)
    return {
        "graphql": graphql,
        "raw": baseline,
        "cpu_ratio": graphql["server_cpu_s"] / baseline["server_cpu_s"],
    }


# ------------------------------------------------------------------------------------------------ main


async def main(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="aihub-bench-api-", dir="/var/tmp"))
    try:
        async with scratch_database(data_dir) as database_url:
            await run_parts(args, data_dir, database_url)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def run_parts(args: argparse.Namespace, data_dir: Path, database_url: str) -> None:
    settings = Settings(data_dir=data_dir, database_url=database_url)
    ids = await prepare(settings, 200 if args.quick else 1000)
    print(
        f"# {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{'PostgreSQL' if database_url.startswith('postgres') else 'SQLite'}",
        flush=True,
    )
    parts = set(args.only.split(",")) if args.only else {"detail", "status", "fanout"}
    if "detail" in parts:
        await report_detail(settings, ids, args)
    if "status" in parts:
        await report_status(settings, ids, args)
    if "fanout" in parts:
        await report_fanout(settings, ids, args)


async def report_detail(settings: Settings, ids: dict[str, Any], args: argparse.Namespace) -> None:
    profile = cProfile.Profile() if args.profile else None
    detail = await bench_detail(settings, ids, 3 if args.quick else 10, profile)
    print(
        f"run detail ({detail['nodes']} nodes, {detail['bytes']:,} bytes): GraphQL {detail['graphql_ms']:.0f} ms, "
        f"from the database {detail['baseline_ms']:.0f} ms, ratio {detail['ratio']:.1f}x, "
        f"same JSON: {detail['same_json']}",
        flush=True,
    )
    if profile:
        print_profile(profile)


def print_profile(profile: cProfile.Profile) -> None:
    pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
    pstats.Stats(profile).sort_stats("tottime").print_stats(30)


async def report_status(settings: Settings, ids: dict[str, Any], args: argparse.Namespace) -> None:
    status = await bench_status(settings, ids, 2.0 if args.quick else 5.0)
    print(
        f"status query: GraphQL {status['graphql_rps']:,.0f} req/s, plain Starlette {status['plain_rps']:,.0f} req/s, "
        f"ratio {status['ratio']:.2f}; server CPU per request {status['graphql_cpu_us']:,.0f} / "
        f"{status['plain_cpu_us']:,.0f} us (so {1e6 / status['graphql_cpu_us']:,.0f} / "
        f"{1e6 / status['plain_cpu_us']:,.0f} req/s per CPU-second of the server)",
        flush=True,
    )


async def report_fanout(settings: Settings, ids: dict[str, Any], args: argparse.Namespace) -> None:
    profile = cProfile.Profile() if args.profile else None
    fanout = await bench_fanout(settings, ids, 0.01 if args.quick else 0.005, profile)
    for name in ("graphql", "raw"):
        f = fanout[name]
        print(
            f"fan-out {name}: {f['subscribers']} subscribers x {f['events']} events: delivered "
            f"{f['delivered']:,}/{f['expected']:,}, p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms, "
            f"max {f['max_ms']:.1f} ms, server CPU {f['server_cpu_s']:.2f} s over {f['wall_s']:.1f} s",
            flush=True,
        )
    print(f"fan-out server CPU ratio GraphQL / raw: {fanout['cpu_ratio']:.1f}x", flush=True)
    if profile:
        print_profile(profile)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve_child(*sys.argv[2:3], int(sys.argv[3]), *sys.argv[4:6])
    elif len(sys.argv) > 1 and sys.argv[1] == "--subscribe":
        url, token, run_id, count, snapshot = sys.argv[2:7]
        asyncio.run(subscriber_child(url, token, run_id, int(count), int(snapshot), "done"))
    else:
        parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
        parser.add_argument("--quick", action="store_true", help="smaller run, shorter measurements")
        parser.add_argument(
            "--profile", action="store_true", help="cProfile the GraphQL part of detail and fanout"
        )
        parser.add_argument("--only", help="comma-separated parts: detail,status,fanout (default: all)")
        asyncio.run(main(parser.parse_args()))
