"""Server-sent events for live pages: run graph updates and log tails.

Both are async generators over the platform's own feeds (``bus.subscribe(run_id)``, ``logs.follow``); the
subscription is closed in ``finally`` when the browser goes away. Only what changed is sent: a node event
re-renders that one node; the run header is re-rendered on run-level events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from markupsafe import escape
from starlette.responses import StreamingResponse

from aihub.bus.base import RunEvent, SubscriberTooSlow
from aihub.db.models import User
from aihub.runtime import Runtime
from aihub.services.errors import NotFound
from aihub.services.queries import get_attempt, get_node, run_snapshot
from aihub.web.render import env, render_string
from aihub.web.svg import Layout

KEEPALIVE = 15.0
#: on (re)connect every node is sent when the graph is small, else only those that have left WAITING
FULL_RESYNC_MAX = 300


def sse(event: str, html: str) -> str:
    data = "".join(f"data: {line}\n" for line in html.strip().splitlines() or [""])
    return f"event: {event}\n{data}\n"


def _response(body: AsyncIterator[str]) -> StreamingResponse:
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


def node_html(run_id: int, row: object, graph: Layout) -> str:
    macro = env.get_template("partials/dag.html").module.node  # type: ignore[attr-defined]
    name = row.name  # type: ignore[attr-defined]
    return str(
        macro(
            name,
            graph.boxes[name],
            row.status.value,  # type: ignore[attr-defined]
            row.retry_count,  # type: ignore[attr-defined]
            f"/runs/{run_id}/nodes/{name}",
            True,
        )
    )


async def header_html(user: User, run_id: int, csrf: str) -> str:
    from aihub.web.runs import run_context

    ctx = await run_context(user, run_id)
    return render_string("partials/runs/header.html", live=True, csrf=csrf, **ctx)


async def _snapshot(user: User, run_id: int, graph: Layout, csrf: str) -> AsyncIterator[str]:
    run, nodes = await run_snapshot(user, run_id)
    yield sse("run", await header_html(user, run_id, csrf))
    full = len(nodes) <= FULL_RESYNC_MAX
    for row in nodes:
        if full or row.status.value != "WAITING":
            yield sse(f"node-{row.name}", node_html(run.id, row, graph))


async def _changes(rt: Runtime, user: User, run_id: int, graph: Layout, csrf: str) -> AsyncIterator[str]:
    """Snapshot, then every change; a subscriber that fell behind resubscribes and resyncs."""
    while True:
        sub = rt.bus.subscribe(run_id)
        try:
            async for chunk in _snapshot(user, run_id, graph, csrf):
                yield chunk
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE):
                        event: RunEvent = await anext(sub)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if event.node is None:
                    yield sse("run", await header_html(user, run_id, csrf))
                elif event.node in graph.boxes:
                    _, row = await get_node(user, run_id, event.node)
                    yield sse(f"node-{row.name}", node_html(run_id, row, graph))
        except SubscriberTooSlow:
            continue
        finally:
            sub.close()


def run_stream(rt: Runtime, user: User, run_id: int, csrf: str) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        from aihub.web.runs import run_context

        graph = (await run_context(user, run_id))["graph"]
        yield "retry: 2000\n\n"
        async for chunk in _changes(rt, user, run_id, graph, csrf):
            yield chunk

    return _response(body())


def log_stream(
    rt: Runtime, user: User, run_id: int, node: str, number: int, offset: int
) -> StreamingResponse:
    async def done() -> bool:
        try:
            _, attempt = await get_attempt(user, run_id, node, number)
        except NotFound:
            return True
        return attempt.status.is_terminal

    async def body() -> AsyncIterator[str]:
        async for line in rt.logs.follow(run_id, node, number, done=done, offset=offset):
            yield sse("line", f'<div class="l">{escape(line)}</div>')
        yield sse("end", "")

    return _response(body())
