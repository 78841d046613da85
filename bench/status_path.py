"""Server CPU of one status query, by path (issue 18, point 3), in one process, without an HTTP client.

Run from the repository root: ``.venv/bin/python bench/status_path.py [--requests 2000] [--rounds 5]``.
The application is called as ASGI directly (a minimal ``scope``/``receive``/``send``, no sockets, no client),
so the CPU measured is the server's share of a request after uvicorn has parsed it. Modes, interleaved per
round: ``fast`` (``run(id) { status }`` on the precompiled path, ``aihub.graphql.fastpath``), ``generic``
(the same with the fast path off), ``typename`` (``{ __typename }``: Strawberry with no resolver), and
``healthz`` (``GET /healthz`` through the same middleware); on PostgreSQL also ``fast, no readers`` (the fast
path reading through Tortoise's pool, ``aihub.db.pg_reads`` off). SQLite in a fresh data dir, or a new database
on the PostgreSQL server of ``AIHUB_DATABASE_URL``; a session token, a run the caller owns. Prints the median
microseconds of CPU per request of each mode. The requests run one after the other, so the CPU is this
process's only (PostgreSQL's is not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scratch_app import scratch_app  # noqa: E402

from aihub.db import pg_reads  # noqa: E402
from aihub.db.models import Run, User, Workflow, WorkflowVersion  # noqa: E402
from aihub.graphql import fastpath  # noqa: E402

STATUS = "query($id: ID!) { run(id: $id) { status } }"


async def call(
    asgi: Any, app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> bytes:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "app": app,
    }
    sent = False
    out: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            out.append(message.get("body", b""))

    await asgi(scope, receive, send)
    return b"".join(out)


def target(app: Any, mode: str) -> Any:
    """The application, or for "router only" its router without any middleware (what the middleware costs)."""
    if not mode.endswith("router only"):
        return app

    return app.router


def on_postgres() -> bool:
    return Run._meta.db.capabilities.dialect == "postgres"


async def a_run(user: User) -> Run:
    workflow = await Workflow.create(name="bench", owner=user)
    version = await WorkflowVersion.create(
        workflow=workflow, number=1, spec={"name": "bench", "nodes": []}, created_by=user
    )
    return await Run.create(version=version, workflow=workflow, owner=user, name="bench", params={})


async def main(requests: int, rounds: int) -> None:
    async with scratch_app("aihub-bench-status-") as (app, user, token):
        run = await a_run(user)
        headers = [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")]
        status = json.dumps({"query": STATUS, "variables": {"id": str(run.id)}}).encode()
        typename = json.dumps({"query": "{ __typename }"}).encode()
        modes = {
            "fast": ("POST", "/graphql", status, True),
            **({"fast, no readers": ("POST", "/graphql", status, True)} if on_postgres() else {}),
            "generic": ("POST", "/graphql", status, False),
            "typename": ("POST", "/graphql", typename, False),
            "healthz": ("GET", "/healthz", b"", False),
            "healthz, router only": ("GET", "/healthz", b"", False),
        }
        answers = {}
        for mode, (method, path, body, fast) in modes.items():
            fastpath.ENABLED, pg_reads.ENABLED = fast, mode != "fast, no readers"
            answers[mode] = await call(target(app, mode), app, method, path, headers, body)
        assert answers["fast"] == answers["generic"] == answers.get("fast, no readers", answers["fast"]), (
            answers
        )
        print(f"answer: {answers['fast'].decode()}")
        cpu_us: dict[str, list[float]] = {mode: [] for mode in modes}
        for round_ in range(rounds):
            order = list(modes) if round_ % 2 == 0 else list(modes)[::-1]
            for mode in order:
                method, path, body, fast = modes[mode]
                fastpath.ENABLED, pg_reads.ENABLED = fast, mode != "fast, no readers"
                started = time.process_time()
                asgi = target(app, mode)
                for _ in range(requests):
                    await call(asgi, app, method, path, headers, body)
                cpu_us[mode].append((time.process_time() - started) / requests * 1e6)
        fastpath.ENABLED = pg_reads.ENABLED = True
    for mode, values in cpu_us.items():
        rounds_text = " ".join(f"{v:.0f}" for v in values)
        print(f"{mode}: {statistics.median(values):.0f} µs CPU per request (median; rounds: {rounds_text})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
