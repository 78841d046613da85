"""Workflow pages: list with versions, create from YAML, new version, version detail with the DAG, export."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aihub.db.models import User
from aihub.domain.spec import parse_spec
from aihub.services.errors import ServiceError
from aihub.services.queries import list_versions, list_workflows
from aihub.services.versions import export_yaml, get_readable_version
from aihub.services.workflows import create_version, create_workflow
from aihub.web.render import render
from aihub.web.session import page, redirect
from aihub.web.svg import layout

TEMPLATE = """name: my-workflow
description: ""
params:
  - name: greeting
    description: what to say
    default: hello
nodes:
  - name: step1
    image: python:3.11-slim
    command: echo "$greeting"
    inputs:
      - {name: greeting, from: params.greeting}
"""


@page
async def workflows_list(request: Request, user: User) -> Response:
    search = request.query_params.get("q", "").strip() or None
    listing = await list_workflows(user, search=search, after=request.query_params.get("after") or None)
    rows = [(wf, await list_versions(user, wf.id)) for wf in listing.items]
    ctx = {"rows": rows, "q": search or "", "next_cursor": listing.next_cursor}
    return render(request, "pages/workflows/list.html", ctx, partial="partials/workflows/table.html")


async def _form(request: Request) -> tuple[str, str]:
    form = await request.form()
    return str(form.get("spec", "")), str(form.get("description", ""))


@page
async def workflow_new(request: Request, user: User) -> Response:
    ctx = {"action": "/workflows/new", "spec": TEMPLATE, "error": None, "title": "Create workflow"}
    if request.method == "POST":
        spec, _ = await _form(request)
        try:
            version = await create_workflow(user, spec)
        except ServiceError as exc:
            ctx.update(spec=spec, error=exc)
            return render(request, "pages/workflows/form.html", ctx, status_code=400)
        return redirect(request, f"/versions/{version.id}")
    return render(request, "pages/workflows/form.html", ctx)


@page
async def version_new(request: Request, user: User) -> Response:
    """A new version of a workflow, starting from the YAML of an existing version (edit, then save)."""
    source = await get_readable_version(user, request.path_params["version_id"])
    ctx = {
        "action": f"/versions/{source.id}/new-version",
        "spec": parse_spec(source.spec).to_yaml(),
        "error": None,
        "title": f"New version of {source.workflow.name}",
    }
    if request.method == "POST":
        spec, description = await _form(request)
        try:
            version = await create_version(user, source.workflow.id, spec, description=description)
        except ServiceError as exc:
            ctx.update(spec=spec, error=exc)
            return render(request, "pages/workflows/form.html", ctx, status_code=400)
        return redirect(request, f"/versions/{version.id}")
    return render(request, "pages/workflows/form.html", ctx)


@page
async def version_detail(request: Request, user: User) -> Response:
    version = await get_readable_version(user, request.path_params["version_id"])
    spec = parse_spec(version.spec)
    ctx = {
        "version": version,
        "spec": spec,
        "yaml": spec.to_yaml(),
        "graph": layout(spec.parents()),
        "versions": await list_versions(user, version.workflow.id),
    }
    return render(request, "pages/workflows/version.html", ctx)


@page
async def version_node(request: Request, user: User) -> Response:
    version = await get_readable_version(user, request.path_params["version_id"])
    spec = parse_spec(version.spec)
    node = next((n for n in spec.nodes if n.name == request.path_params["node"]), None)
    return render(request, "partials/workflows/node.html", {"version": version, "node": node})


@page
async def version_export(request: Request, user: User) -> Response:
    version = await get_readable_version(user, request.path_params["version_id"])
    text = await export_yaml(user, version.id)
    filename = f"{version.workflow.name}-v{version.number}.yaml"
    return Response(
        text,
        media_type="application/yaml",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def workflow_routes() -> list[BaseRoute]:
    return [
        Route("/workflows", workflows_list),
        Route("/workflows/new", workflow_new, methods=["GET", "POST"]),
        Route("/versions/{version_id:int}", version_detail),
        Route("/versions/{version_id:int}/nodes/{node:str}", version_node),
        Route("/versions/{version_id:int}/new-version", version_new, methods=["GET", "POST"]),
        Route("/versions/{version_id:int}/export.yaml", version_export),
    ]
