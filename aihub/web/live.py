"""Server-sent events for live pages: run graph updates and log tails.

Both are async generators over the platform's own feeds (the run feed of ``aihub.services.live``, which
GraphQL's ``runEvents`` sends too, and ``logs.follow``); the subscription is closed when the browser goes away.
Only what changed is sent: a node event re-renders that one node (in a large graph, a node inside a summary box
sends its chip and that box's summary); the run header is re-rendered on run-level events. The snapshot sent on (re)connect ends with a ``synced`` event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from markupsafe import escape
from starlette.responses import StreamingResponse

from aihub.bus.base import RunEvent, SubscriberTooSlow
from aihub.services.access import can_act_on_run, get_run
from aihub.services.files import follow_log
from aihub.services.live import RunFeed, open_attempt_watch, open_run_feed
from aihub.services.queries import get_node, run_nodes
from aihub.web.graphs import version_graph
from aihub.web.render import env, render_string
from aihub.web.svg import Layout, status_counts

if TYPE_CHECKING:
    from aihub.db.models import User
    from aihub.runtime import Runtime

KEEPALIVE = 15.0
#: on (re)connect every node is sent when the graph is small, else only those that have left WAITING
FULL_RESYNC_MAX = 300


def sse(event: str, html: str) -> str:
    data = "".join(f"data: {line}\n" for line in html.strip().splitlines() or [""])
    return f"event: {event}\n{data}\n"


def _response(body: AsyncIterator[str]) -> StreamingResponse:
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


async def until_draining(
    draining: asyncio.Event, body: AsyncIterator[str], farewell: str = ""
) -> AsyncIterator[str]:
    """``body``'s chunks until the server begins to shut down; then ``farewell`` and the end of the stream (the
    server waits for open responses, so a stream left open would hold the shutdown until its timeout)."""
    stop = asyncio.ensure_future(draining.wait())
    chunk: asyncio.Future[str] | None = None
    try:
        while not draining.is_set():
            chunk = asyncio.ensure_future(anext(body))
            await asyncio.wait({chunk, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not chunk.done():
                break
            try:
                yield chunk.result()
            except StopAsyncIteration:
                return
        if farewell:
            yield farewell
    finally:
        # also when the client went away (this generator cancelled): the pending read must end before the
        # body can be closed
        stop.cancel()
        if chunk is not None and not chunk.done():
            chunk.cancel()
            await asyncio.gather(chunk, return_exceptions=True)
        await body.aclose()  # type: ignore[attr-defined]


def node_html(run_id: int, row: object, graph: Layout) -> str:
    macro = _macro("node")
    name = row.name  # type: ignore[attr-defined]
    return str(
        macro(  # type: ignore[operator]
            name,
            graph.boxes[name],
            row.status.value,  # type: ignore[attr-defined]
            row.retry_count,  # type: ignore[attr-defined]
            f"/runs/{run_id}/nodes/{name}",
            True,
            graph.nav.get(f"node-{name}"),
        )
    )


def _macro(name: str) -> object:
    return getattr(env.get_template("partials/dag.html").module, name)


def group_html(run_id: int, graph: Layout, index: int, statuses: dict[str, str]) -> str:
    """The summary box of group ``index`` with the current counts (its live update)."""
    group = graph.groups[index]
    counts = status_counts(group.names, statuses)
    nav = graph.nav.get(f"group-{index}")
    return str(_macro("group")(group, counts, f"/runs/{run_id}/groups/{index}", True, nav))  # type: ignore[operator]


def chip_html(run_id: int, row: object) -> str:
    """A node of a summary box, as listed when the box is expanded (its live update)."""
    name = row.name  # type: ignore[attr-defined]
    return str(
        _macro("chip")(  # type: ignore[operator]
            name,
            row.status.value,  # type: ignore[attr-defined]
            row.retry_count,  # type: ignore[attr-defined]
            f"/runs/{run_id}/nodes/{name}",
            True,
        )
    )


def node_update(run_id: int, row: object, graph: Layout, statuses: dict[str, str]) -> str:
    """What one node's change sends: its box, or (inside a summary box) its chip and that box's summary."""
    name = row.name  # type: ignore[attr-defined]
    statuses[name] = row.status.value  # type: ignore[attr-defined]
    if name in graph.boxes:
        return sse(f"node-{name}", node_html(run_id, row, graph))
    index = graph.group_of.get(name)
    if index is None:
        return ""
    return sse(f"chip-{name}", chip_html(run_id, row)) + sse(
        f"group-{index}", group_html(run_id, graph, index, statuses)
    )


async def run_context(user: User, run_id: int) -> dict[str, Any]:
    run = await get_run(user, run_id)
    await run.fetch_related("workflow", "version", "owner")
    graph = version_graph(run.version.spec)
    rows = await run_nodes(run)
    nodes = [rows[name] for name in graph.order if name in rows]
    return {
        "run": run,
        "nodes": {n.name: n for n in nodes},
        "statuses": {n.name: n.status.value for n in nodes},
        "graph": graph.layout,
        "can_act": can_act_on_run(user, run),
    }


async def header_html(user: User, run_id: int, csrf: str) -> str:
    ctx = await run_context(user, run_id)
    return render_string("partials/runs/header.html", live=True, csrf=csrf, **ctx)


async def _snapshot(
    feed: RunFeed, user: User, graph: Layout, csrf: str, statuses: dict[str, str]
) -> AsyncIterator[str]:
    run, nodes, run_id = feed.run, feed.nodes, feed.run.id
    statuses.clear()
    statuses.update((row.name, row.status.value) for row in nodes)
    yield sse("run", await header_html(user, run_id, csrf))
    full = len(nodes) <= FULL_RESYNC_MAX
    for row in nodes:
        if row.name in graph.boxes and (full or row.status.value != "WAITING"):
            yield sse(f"node-{row.name}", node_html(run.id, row, graph))
    for group in graph.groups:
        yield sse(f"group-{group.index}", group_html(run.id, graph, group.index, statuses))
    # the timeline refetches itself too: a run that ended before this stream opened shows its attempts now,
    # not "no attempt has started yet" until the 2 s fallback
    yield sse("timeline", "")
    yield sse("synced", "")


async def _changes(rt: Runtime, user: User, run_id: int, graph: Layout, csrf: str) -> AsyncIterator[str]:
    """Snapshot, then every change; a subscriber that fell behind resubscribes and resyncs."""
    statuses: dict[str, str] = {}
    while True:
        try:
            async with open_run_feed(rt.bus, user, run_id) as feed:
                async for chunk in _snapshot(feed, user, graph, csrf, statuses):
                    yield chunk
                while True:
                    try:
                        async with asyncio.timeout(KEEPALIVE):
                            event: RunEvent = await anext(feed.events)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if event.node is None:
                        yield sse("run", await header_html(user, run_id, csrf))
                        yield sse("timeline", "")
                    elif event.node in graph.boxes or event.node in graph.group_of:
                        _, row = await get_node(user, run_id, event.node)
                        yield node_update(run_id, row, graph, statuses)
                        # an open node panel and the timeline refetch themselves on these (no payload)
                        yield sse(f"panel-{event.node}", "") + sse("timeline", "")
        except SubscriberTooSlow:
            continue


def run_stream(rt: Runtime, user: User, run_id: int, csrf: str) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        graph = (await run_context(user, run_id))["graph"]
        yield "retry: 2000\n\n"
        async for chunk in _changes(rt, user, run_id, graph, csrf):
            yield chunk

    # on shutdown the stream just ends: the browser's EventSource reconnects after the retry delay (to another
    # replica, or to this one restarted) and gets a fresh snapshot, so nothing is missed
    return _response(until_draining(rt.draining, body()))


#: characters of log lines one live view receives before it stops (the page shows the log's last 256 KiB first)
LIVE_WINDOW = 1024 * 1024
LIVE_WINDOW_NOTE = "[aihub: the live view stops after 1 MiB of new lines; reload the page for the newest, or download the log]"
RESTART_NOTE = (
    "[aihub: the server is restarting; the live view stopped here — reload the page for the newest lines]"
)


#: bus events a live log's watch may fall behind by before it asks the database instead (only its node's count)
WATCH_BUFFER = 10_000


def log_stream(
    rt: Runtime, user: User, run_id: int, node: str, number: int, offset: int
) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        sent = 0
        # the attempt's end comes from the bus (the database only if the watch falls behind), not from a query
        # on every poll of the file: 20 open log tabs were 400 queries a second
        async with open_attempt_watch(rt.bus, user, run_id, node, number, maxsize=WATCH_BUFFER) as watch:
            async for line in follow_log(rt.logs, run_id, node, number, offset=offset, done=watch.done):
                yield sse("line", f'<div class="l">{escape(line)}</div>')
                sent += len(line) + 1
                if sent > LIVE_WINDOW:  # the page never holds more than a window: reload for the newest lines
                    yield sse("line", f'<div class="l muted">{escape(LIVE_WINDOW_NOTE)}</div>')
                    break
        yield sse("end", "")

    # a log tail resumes at a byte offset the page knows only from its first load: on shutdown it ends with a note
    # (and ``end``) rather than reconnecting to lines it already shows
    farewell = sse("line", f'<div class="l muted">{escape(RESTART_NOTE)}</div>') + sse("end", "")
    return _response(until_draining(rt.draining, body(), farewell))
