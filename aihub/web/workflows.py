"""Workflow pages: list with versions, version detail with the DAG, templates, export (the editor is in
``aihub.web.editor``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aihub.domain.messages import msg
from aihub.domain.spec import parse_spec
from aihub.services.access import get_workflow
from aihub.services.editor import can_add_version
from aihub.services.errors import NotFound
from aihub.services.queries import list_versions, list_workflows, load_related, versions_of
from aihub.services.versions import export_yaml, get_readable_version, set_template
from aihub.web.graphs import version_graph
from aihub.web.render import is_htmx, render
from aihub.web.runs import group_of
from aihub.web.session import page, redirect

if TYPE_CHECKING:
    from aihub.db.models import User

#: the version page shows this many lines of the spec; the rest is in Export YAML
YAML_LINES = 400


@page
async def workflows_list(request: Request, user: User) -> Response:
    """Workflows (searchable, paged), each row expanding to all its versions with their actions."""
    search = request.query_params.get("q", "").strip() or None
    owner = request.query_params.get("owner", "").strip() or None
    listing = await list_workflows(
        user, search=search, owner=owner, after=request.query_params.get("after") or None
    )
    await load_related(listing.items, "owner")
    rows = list(zip(listing.items, await versions_of(listing.items), strict=True))
    editable = {wf.id for wf in listing.items if user.is_admin or wf.owner_id == user.id}  # type: ignore[attr-defined]
    keep = {k: v for k, v in (("q", search), ("owner", owner)) if v}
    ctx = {
        "rows": rows,
        "q": search or "",
        "owner": owner or "",
        "next_url": f"/workflows?{urlencode({**keep, 'after': listing.next_cursor})}"
        if listing.next_cursor
        else None,
        "editable": editable,
    }
    return render(request, "pages/workflows/list.html", ctx, partial="partials/workflows/table.html")


@page
async def workflow_detail(request: Request, user: User) -> Response:
    """A workflow's page: its description and every version (newest first) with run, copy, view, export."""
    workflow = await get_workflow(user, request.path_params["workflow_id"])
    await workflow.fetch_related("owner")
    versions = (await versions_of([workflow]))[0]
    ctx = {
        "workflow": workflow,
        "versions": versions,
        "can_version": user.is_admin or workflow.owner_id == user.id,  # type: ignore[attr-defined]
    }
    return render(request, "pages/workflows/workflow.html", ctx)


@page
async def version_detail(request: Request, user: User) -> Response:
    version = await get_readable_version(user, request.path_params["version_id"])
    return render(request, "pages/workflows/version.html", await version_context(user, version))


async def version_context(user: User, version: Any) -> dict[str, Any]:
    """What the version page shows: the graph, params, the start of the spec, the workflow's versions."""
    graph = version_graph(version.spec)
    lines = graph.yaml.splitlines()
    ctx = {
        "version": version,
        "spec": graph.spec,
        "yaml": "\n".join(lines[:YAML_LINES]),
        "yaml_more": max(len(lines) - YAML_LINES, 0),
        "graph": graph.layout,
        "versions": await list_versions(user, version.workflow.id),
        "can_edit": await can_add_version(user, version),
    }
    return ctx


async def in_version_page(
    request: Request, user: User, version: Any, partial: str, ctx: dict[str, Any], **slots: Any
) -> Response:
    """``partial`` alone for htmx; opened directly, the version page with the partial in its place."""
    if is_htmx(request):
        return render(request, partial, ctx)
    full = await version_context(user, version)
    full.update({k: v for k, v in ctx.items() if k not in full}, **slots)
    return render(request, "pages/workflows/version.html", full)


@page
async def version_template(request: Request, user: User) -> Response:
    """Mark a version as a template (everybody may start a workflow from it), or unmark it."""
    form = await request.form()
    version = await set_template(user, request.path_params["version_id"], form.get("is_template") == "1")
    return redirect(request, f"/versions/{version.id}")


@page
async def version_node(request: Request, user: User) -> Response:
    version = await get_readable_version(user, request.path_params["version_id"])
    spec = parse_spec(version.spec)
    node = next((n for n in spec.nodes if n.name == request.path_params["node"]), None)
    if node is None:
        raise NotFound(
            msg(
                "version {version} has no node {node}",
                version=version.id,
                node=repr(request.path_params["node"]),
            ),
            field="node",
        )
    ctx = {"version": version, "node": node}
    return await in_version_page(request, user, version, "partials/workflows/node.html", ctx, open_node=node)


@page
async def version_group(request: Request, user: User) -> Response:
    """The nodes of one summary box of a large graph; each opens the node's configuration."""
    version = await get_readable_version(user, request.path_params["version_id"])
    group = group_of(version_graph(version.spec).layout, request.path_params["index"])
    ctx = {
        "group": group,
        "counts": {},
        "nodes": None,
        "href_prefix": f"/versions/{version.id}/nodes/",
        "live": False,
    }
    return await in_version_page(request, user, version, "partials/dag_group.html", ctx, open_group=ctx)


@page
async def version_export(request: Request, user: User) -> Response:
    version = await get_readable_version(user, request.path_params["version_id"])
    text = await export_yaml(user, version.id)
    filename = f"{version.workflow.name}-v{version.number}.yaml"
    return Response(
        text, media_type="application/yaml", headers={"Content-Disposition": attachment(filename)}
    )


def attachment(filename: str) -> str:
    """A Content-Disposition for any name: an ASCII fallback, and the real (e.g. Chinese) name per RFC 6266."""
    fallback = filename.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    if fallback == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def workflow_routes() -> list[BaseRoute]:
    return [
        Route("/workflows", workflows_list),
        Route("/workflows/{workflow_id:int}", workflow_detail),
        Route("/versions/{version_id:int}", version_detail),
        Route("/versions/{version_id:int}/nodes/{node:str}", version_node),
        Route("/versions/{version_id:int}/groups/{index:int}", version_group),
        Route("/versions/{version_id:int}/template", version_template, methods=["POST"]),
        Route("/versions/{version_id:int}/export.yaml", version_export),
    ]
