"""Workflow pages: list with versions, version detail with the DAG, templates, export (the editor is in
``aihub.web.editor``)."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aihub.db.models import User
from aihub.domain.spec import parse_spec
from aihub.services.editor import can_add_version
from aihub.services.queries import list_versions, list_workflows
from aihub.services.versions import export_yaml, get_readable_version, set_template
from aihub.web.graphs import version_graph
from aihub.web.render import render
from aihub.web.runs import group_of
from aihub.web.session import page, redirect

#: the version page shows this many lines of the spec; the rest is in Export YAML
YAML_LINES = 400


@page
async def workflows_list(request: Request, user: User) -> Response:
    search = request.query_params.get("q", "").strip() or None
    listing = await list_workflows(user, search=search, after=request.query_params.get("after") or None)
    rows = [(wf, await list_versions(user, wf.id)) for wf in listing.items]
    ctx = {"rows": rows, "q": search or "", "next_cursor": listing.next_cursor}
    return render(request, "pages/workflows/list.html", ctx, partial="partials/workflows/table.html")


@page
async def version_detail(request: Request, user: User) -> Response:
    version = await get_readable_version(user, request.path_params["version_id"])
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
    return render(request, "pages/workflows/version.html", ctx)


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
    return render(request, "partials/workflows/node.html", {"version": version, "node": node})


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
    return render(request, "partials/dag_group.html", ctx)


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
        Route("/versions/{version_id:int}", version_detail),
        Route("/versions/{version_id:int}/nodes/{node:str}", version_node),
        Route("/versions/{version_id:int}/groups/{index:int}", version_group),
        Route("/versions/{version_id:int}/template", version_template, methods=["POST"]),
        Route("/versions/{version_id:int}/export.yaml", version_export),
    ]
