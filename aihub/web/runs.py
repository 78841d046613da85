"""Run pages: create (form from the version's params), list, detail with the live DAG, node tabs, actions."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from babel import Locale
from babel.dates import format_timedelta
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from aihub.domain.clock import utcnow
from aihub.domain.ids import parse_count, parse_row_id
from aihub.domain.messages import msg
from aihub.domain.spec import parse_spec
from aihub.domain.status import NodeStatus, RunStatus
from aihub.services import executors, files
from aihub.services.access import can_act_on_run, get_run, workflows_visible_to
from aihub.services.editor import run_attempts
from aihub.services.errors import InvalidInput, NotFound, ServiceError
from aihub.services.executors import ExecutorUnavailable
from aihub.services.queries import (
    get_attempt,
    get_node,
    list_runs,
    list_versions,
    list_workflows,
    load_related,
    run_events,
    run_nodes,
)
from aihub.services.runs import copy_run, create_run, retry_run, stop_run
from aihub.services.versions import get_readable_version
from aihub.web.graphs import version_graph
from aihub.web.i18n import current_locale, format_datetime
from aihub.web.live import log_stream, run_context, run_stream
from aihub.web.paging import paginate
from aihub.web.render import is_htmx, render
from aihub.web.session import page, redirect
from aihub.web.svg import Layout, status_counts
from aihub.web.timeline import chart

if TYPE_CHECKING:
    from aihub.db.models import NodeRun, Run, User, Workflow, WorkflowVersion
    from aihub.runtime import Runtime

TABS = ("io", "details", "logs", "container", "events")


def _times_shown(described: dict[str, Any]) -> dict[str, Any]:
    """An executor's description of an attempt (the container tab) with its times (``..._at``: ISO 8601 text,
    as the API gives them) written as the page writes every other time, in the reader's language."""
    return {key: _time_shown(value) if key.endswith("_at") else value for key, value in described.items()}


#: an RFC 3339 time's fraction past the microseconds Python reads (podman and docker give nanoseconds)
_NANOSECONDS = re.compile(r"(\.\d{6})\d+")


def _time_shown(value: object, form: str = "medium") -> object:
    """An executor's time (ISO 8601 / RFC 3339 text) as the page writes times; anything else (no time, the
    zero time a container engine gives what has not happened) as it is."""
    if not isinstance(value, str):
        return value
    try:
        when = datetime.fromisoformat(_NANOSECONDS.sub(r"\1", value))
    except ValueError:
        return value
    return format_datetime(when, form) if when.year > 1 else value


TABLE_PAGE = 100
LOG_PAGE = 256 * 1024


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


#: how many workflows the create-run page offers at once (a search narrows them)
PICK_WORKFLOWS = 50


async def _pick(
    user: User, workflow_raw: str, version_raw: str, search: str
) -> tuple[list[Workflow], Workflow | None, list[WorkflowVersion], WorkflowVersion | None]:
    """The create-run page's choices: the workflows to pick from, the chosen one, its versions (newest first)
    and the chosen version (the newest unless one of this workflow's versions was asked for)."""
    listing = await list_workflows(user, search=search or None, first=PICK_WORKFLOWS)
    workflows = list(listing.items)
    chosen: Workflow | None = None
    workflow_id = parse_row_id(workflow_raw)
    if workflow_id is not None:
        chosen = next((w for w in workflows if w.id == workflow_id), None)
        if chosen is None:
            chosen = await workflows_visible_to(user).get_or_none(id=workflow_id)
            if chosen is None:
                raise NotFound(msg("workflow {workflow} not found", workflow=workflow_raw), field="workflow")
            workflows.insert(0, chosen)
    if chosen is None:
        return workflows, None, [], None
    versions = list(reversed(await list_versions(user, chosen.id)))
    await load_related(versions, "created_by")
    wanted = parse_row_id(version_raw)
    version = next((v for v in versions if v.id == wanted), versions[0] if versions else None)
    return workflows, chosen, versions, version


@page
async def run_create(request: Request, user: User) -> Response:
    """``/runs/new``: pick a workflow, then one of its versions, then fill in the run name and params."""
    query = request.query_params
    search = query.get("wq", "").strip()
    workflows, workflow, versions, version = await _pick(
        user, query.get("workflow", ""), query.get("version", ""), search
    )
    ctx: dict[str, Any] = {"workflows": workflows, "workflow": workflow, "versions": versions, "wq": search}
    if version is not None:
        version.workflow = workflow  # type: ignore[assignment]
        ctx.update(_form_context(version, None))
        ctx.update(await _author_check(user, version))
    else:
        ctx.update(version=None, params=[], values={}, name="", copy_of=None, error=None)
    return render(request, "pages/runs/new.html", ctx, partial="partials/runs/create.html")


#: nodes listed by the author check (the rest are counted)
AUTHOR_CHECK_NODES = 50


async def _author_check(user: User, version: WorkflowVersion) -> dict[str, Any]:
    """Someone else's version runs their commands under the caller's name and run token: who wrote it and what
    it runs is shown, and must be confirmed, before a run starts (issue 11)."""
    author_id = version.created_by_id  # type: ignore[attr-defined]
    if author_id == user.id:
        return {"author": None, "runs_what": [], "runs_more": 0}
    nodes = parse_spec(version.spec).nodes
    shown = [(n.name, f"module {n.module}" if n.module else n.command) for n in nodes[:AUTHOR_CHECK_NODES]]
    await version.fetch_related("created_by")
    return {
        "author": version.created_by,
        "runs_what": shown,
        "runs_more": max(0, len(nodes) - AUTHOR_CHECK_NODES),
    }


def _form_context(version: WorkflowVersion, source: Run | None) -> dict[str, Any]:
    params = parse_spec(version.spec).params
    return {
        "version": version,
        "params": params,
        "values": dict(source.params) if source else {p.name: p.default or "" for p in params},
        "name": f"{source.name}-copy" if source else f"{version.workflow.name}-v{version.number}",
        "copy_of": source.id if source else None,
        "error": None,
    }


@page
async def run_new(request: Request, user: User) -> Response:
    """A version's "Run" (and a run's "Copy"): the create-run page with this version preselected."""
    version = await get_readable_version(user, request.path_params["version_id"])
    params = parse_spec(version.spec).params
    copy_id = parse_row_id(request.query_params.get("copy_of", ""))
    source = await get_run(user, copy_id) if copy_id is not None else None
    try:  # the same choices as /runs/new, this workflow and version chosen
        workflows, _, versions, _ = await _pick(user, str(version.workflow.id), str(version.id), "")
    except NotFound:  # a template of a workflow the caller cannot see: only this version
        workflows, versions = [version.workflow], [version]
        await load_related(versions, "created_by")
    ctx: dict[str, Any] = {
        "workflows": workflows,
        "workflow": version.workflow,
        "versions": versions,
        "wq": "",
        **_form_context(version, source),
        **await _author_check(user, version),
    }
    if request.method == "POST":
        form = await request.form()
        name = str(form.get("name", ""))
        values = {p.name: str(form.get(f"param.{p.name}", "")) for p in params}
        given = {k: v for k, v in values.items() if v != "" or _has_default(params, k)}
        ctx.update(name=name, values=values)
        if ctx["author"] is not None and form.get("author_ok") != str(version.id):
            ctx["author_missing"] = True  # someone else's commands: not without a look at them
            return render(request, "pages/runs/new.html", ctx, status_code=400)
        try:
            if source is not None:
                run = await copy_run(runtime(request).bus, user, source.id, name=name, params=given)
            else:
                run = await create_run(runtime(request).bus, user, version.id, name=name, params=given)
        except ServiceError as exc:
            ctx["error"] = exc
            return render(request, "pages/runs/new.html", ctx, status_code=400)
        return redirect(request, f"/runs/{run.id}")
    return render(request, "pages/runs/new.html", ctx)


def _day(raw: str, field: str) -> datetime | None:
    """A date filter (YYYY-MM-DD, as the date input sends it) as the start of that UTC day."""
    if not raw:
        return None
    try:
        return datetime.combine(date.fromisoformat(raw), time(0), tzinfo=UTC)
    except ValueError as exc:
        raise InvalidInput(
            msg("{field} must be a date like 2026-12-05 (got {value})", field=field, value=repr(raw)),
            field=field,
        ) from exc


def _has_default(params: list[Any], name: str) -> bool:
    return any(p.name == name and p.default is not None for p in params)


@page
async def runs_list(request: Request, user: User) -> Response:
    """Runs, newest first, 50 a page (a keyset cursor: the 200th page costs what the first does), filtered by
    status, workflow name, owner and creation date (from/to, whole UTC days)."""
    q = request.query_params
    status = q.get("status", "")
    statuses = [RunStatus(status)] if status in RunStatus.__members__ else []
    filters = {k: q.get(k, "").strip() for k in ("workflow", "owner", "from", "to")}
    day = timedelta(days=1)
    start, end = _day(filters["from"], "from"), _day(filters["to"], "to")
    listing = await list_runs(
        user,
        statuses=statuses,
        workflow_search=filters["workflow"] or None,
        owner=filters["owner"] or None,
        created_after=start,
        created_before=end + day if end and end.date() < date.max else None,  # to=9999-12-31: no bound
        after=q.get("after") or None,
    )
    await load_related(listing.items, "workflow", "version", "owner")
    keep = {k: v for k, v in {"status": status, **filters}.items() if v}
    ctx = {
        "runs": listing.items,
        "next_cursor": listing.next_cursor,
        "next_url": f"/runs?{urlencode({**keep, 'after': listing.next_cursor})}"
        if listing.next_cursor
        else None,
        "filters": filters,
        "status": status,
        "statuses": list(RunStatus),
        "can_act": {r.id: can_act_on_run(user, r) for r in listing.items},
    }
    return render(request, "pages/runs/list.html", ctx, partial="partials/runs/table.html")


def group_of(graph: Layout, raw: object) -> Any:
    index = int(str(raw))
    if not 0 <= index < len(graph.groups):
        raise NotFound(msg("the graph has no group {index}", index=index), field="group")
    return graph.groups[index]


async def timeline_context(user: User, run: Run) -> dict[str, Any]:
    return {
        "timeline": chart(await run_attempts(user, run.id), utcnow()),
        "timeline_live": not run.status.is_terminal,
    }


async def page_context(user: User, run_id: int) -> dict[str, Any]:
    """What the whole run page needs: the run, its graph and its timeline."""
    ctx = await run_context(user, run_id)
    ctx.update(await timeline_context(user, ctx["run"]))
    return ctx


async def in_run_page(
    request: Request, user: User, partial: str, ctx: dict[str, Any], **slots: Any
) -> Response:
    """``partial`` alone for htmx; opened directly (a link in a new tab, a bookmark), the run page with the
    partial in its place (``slots`` says which: ``node`` for the panel, ``group`` for the list of a box)."""
    if is_htmx(request):
        return render(request, partial, ctx)
    full = await page_context(user, request.path_params["run_id"])
    full.update({k: v for k, v in ctx.items() if k not in full}, **slots)
    return render(request, "pages/runs/detail.html", full)


@page
async def run_detail(request: Request, user: User) -> Response:
    return render(request, "pages/runs/detail.html", await page_context(user, request.path_params["run_id"]))


@page
async def run_table(request: Request, user: User) -> Response:
    """The graph as a table (name, status, retries, started, duration), 100 nodes a page, optionally one
    status only: the text alternative of the drawing, for any size of run."""
    run = await get_run(user, request.path_params["run_id"])
    await run.fetch_related("workflow", "version")
    order = version_graph(run.version.spec).table_order
    status = request.query_params.get("status", "")
    rows = await run_nodes(run, NodeStatus(status) if status in NodeStatus.__members__ else None)
    items, pager = paginate(request, [rows[name] for name in order if name in rows], TABLE_PAGE)
    now = utcnow()
    ctx = {
        "run": run,
        "rows": [
            (n, duration(n.started_at, n.finished_at or (now if n.started_at else None))) for n in items
        ],
        "total": len(rows),
        "pager": pager,
        "status": status,
        "statuses": list(NodeStatus),
        "embedded": is_htmx(request),
    }
    return render(request, "pages/runs/nodes.html", ctx, partial="partials/runs/node_table.html")


def duration(start: datetime | None, end: datetime | None) -> str:
    """How long a node ran, in the UI's language (e.g. "3 seconds", "3秒"); "" when it has not started."""
    if start is None or end is None:
        return ""
    return format_timedelta(end - start, threshold=1.2, locale=Locale.parse(current_locale()))


@page
async def run_group(request: Request, user: User) -> Response:
    """The nodes of one summary box of a large run graph, as live chips that open the node panel."""
    ctx = await run_context(user, request.path_params["run_id"])
    group = group_of(ctx["graph"], request.path_params["index"])
    run_id = ctx["run"].id
    listing = {
        "group": group,
        "counts": status_counts(group.names, ctx["statuses"]),
        "nodes": ctx["nodes"],
        "href_prefix": f"/runs/{run_id}/nodes/",
        "live": True,
    }
    return await in_run_page(request, user, "partials/dag_group.html", listing, open_group=listing)


@page
async def run_timeline(request: Request, user: User) -> Response:
    """The Gantt chart of the run's attempts; it polls itself while the run is active."""
    run = await get_run(user, request.path_params["run_id"])
    ctx = {"run": run, **await timeline_context(user, run)}
    return await in_run_page(request, user, "partials/runs/timeline.html", ctx)


@page
async def run_live(request: Request, user: User) -> Response:
    run = await get_run(user, request.path_params["run_id"])
    return run_stream(runtime(request), user, run.id, request.state.csrf)


@page
async def run_stop(request: Request, user: User) -> Response:
    """GET: "Stop this run?" (the Stop buttons lead here); POST: stop it."""
    if request.method == "GET":
        run = await get_run(user, request.path_params["run_id"])
        await run.fetch_related("workflow", "version")
        ctx = {"run": run, "can_act": can_act_on_run(user, run)}
        return render(request, "pages/runs/stop.html", ctx)
    run = await stop_run(runtime(request).bus, user, request.path_params["run_id"])
    return redirect(request, f"/runs/{run.id}")


@page
async def run_retry(request: Request, user: User) -> Response:
    form = await request.form()
    from_node = str(form.get("from_node", "")) or None
    run = await retry_run(runtime(request).bus, user, request.path_params["run_id"], from_node=from_node)
    return redirect(request, f"/runs/{run.id}")


@page
async def run_copy(request: Request, user: User) -> Response:
    run = await get_run(user, request.path_params["run_id"])
    return redirect(request, f"/versions/{run.version_id}/run?copy_of={run.id}")  # type: ignore[attr-defined]


async def _attempt_number(request: Request, row: NodeRun) -> int:
    raw = request.query_params.get("attempt", "")
    number = parse_count(raw)
    return row.attempt if number is None else number


@page
async def node_panel(request: Request, user: User) -> Response:
    run_id, name = request.path_params["run_id"], request.path_params["node"]
    run, row = await get_node(user, run_id, name)
    tab = request.query_params.get("tab", "io")
    tab = tab if tab in TABS else "io"
    ctx: dict[str, Any] = {
        "run": run,
        "node": row,
        "tab": tab,
        "can_act": can_act_on_run(user, run),
        "confirm": request.query_params.get("confirm") == "retry",
    }
    rt = runtime(request)
    number = await _attempt_number(request, row)
    if tab in ("logs", "container") and number > 0:
        if tab == "container":
            _, attempt = await get_attempt(user, run_id, name, number)
            try:
                ctx["container"] = _times_shown(
                    await executors.describe_attempt(rt.attempt_views, attempt.handle)
                )
            except ExecutorUnavailable as exc:
                ctx.update(container={}, container_error=exc.reason)
        else:
            # the last LOG_PAGE bytes, from a line's start; the live view goes on from there
            tail = await files.log_tail(rt.logs, user, run.id, name, number, LOG_PAGE)
            attempt = tail.attempt
            ctx.update(lines=tail.lines, offset=tail.offset, truncated=tail.truncated)
            ctx["live"] = not attempt.status.is_terminal
        ctx["attempt"] = attempt
    if tab == "details":
        ctx.update(await _image_details(rt, run, name))
    if tab == "events":
        ctx["events"] = await run_events(user, run_id, node=name)
        if number > 0:
            _, attempt = await get_attempt(user, run_id, name, number)
            try:
                events = await executors.attempt_executor_events(rt.attempt_views, attempt.handle)
                ctx["cluster_events"] = [{**e, "time": _time_shown(e.get("time"), "time")} for e in events]
            except ExecutorUnavailable as exc:
                ctx["cluster_events_error"] = exc.reason
    ctx["attempts"] = list(range(row.attempt, 0, -1))
    return await in_run_page(request, user, "partials/runs/panel.html", ctx, node=row)


async def _image_details(rt: Runtime, run: Run, name: str) -> dict[str, Any]:
    """The node's image, and whether this installation's executor runs nodes in their images at all."""
    await run.fetch_related("version")
    node = next((n for n in parse_spec(run.version.spec).nodes if n.name == name), None)
    return {"image": node.image if node else None, "image_ignored": rt.settings.executor == "local"}


@page
async def log_live(request: Request, user: User) -> Response:
    run_id, name = request.path_params["run_id"], request.path_params["node"]
    await get_attempt(user, run_id, name, request.path_params["attempt"])
    raw = request.query_params.get("offset", "0")
    offset = parse_count(raw) or 0
    return log_stream(runtime(request), user, run_id, name, request.path_params["attempt"], offset)


@page
async def log_download(request: Request, user: User) -> Response:
    run_id, name, number = (request.path_params[k] for k in ("run_id", "node", "attempt"))
    download = await files.log_download(runtime(request).logs, user, run_id, name, number)
    return StreamingResponse(download.chunks, media_type="text/plain", headers=_attachment(download.filename))


@page
async def output_download(request: Request, user: User) -> Response:
    run_id, name, output = (request.path_params[k] for k in ("run_id", "node", "output"))
    download = await files.output_download(runtime(request).artifacts, user, run_id, name, output)
    return StreamingResponse(
        download.chunks, media_type="application/gzip", headers=_attachment(download.filename)
    )


def _attachment(filename: str) -> dict[str, str]:
    return {"content-disposition": f'attachment; filename="{filename}"'}


def run_routes() -> list[BaseRoute]:
    node = "/runs/{run_id:int}/nodes/{node:str}"
    return [
        Route("/versions/{version_id:int}/run", run_new, methods=["GET", "POST"]),
        Route("/runs", runs_list),
        Route("/runs/new", run_create),
        Route("/runs/{run_id:int}", run_detail),
        Route("/runs/{run_id:int}/live", run_live),
        Route("/runs/{run_id:int}/timeline", run_timeline),
        Route("/runs/{run_id:int}/table", run_table),
        Route("/runs/{run_id:int}/groups/{index:int}", run_group),
        Route("/runs/{run_id:int}/stop", run_stop, methods=["GET", "POST"]),
        Route("/runs/{run_id:int}/retry", run_retry, methods=["POST"]),
        Route("/runs/{run_id:int}/copy", run_copy, methods=["POST", "GET"]),
        Route(node, node_panel),
        Route(node + "/logs/{attempt:int}/live", log_live),
        Route(node + "/logs/{attempt:int}/download", log_download),
        Route(node + "/outputs/{output:str}/download", output_download),
    ]
