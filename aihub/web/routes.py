"""The web UI's routes: server-rendered pages (Jinja2 + htmx), SSE for live runs, vendored static files."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from aihub.web.admin import admin_routes
from aihub.web.auth_routes import auth_routes
from aihub.web.editor import editor_routes
from aihub.web.modules import module_routes
from aihub.web.render import STATIC
from aihub.web.runs import run_routes
from aihub.web.session import page, redirect
from aihub.web.workflows import workflow_routes

if TYPE_CHECKING:
    from aihub.db.models import User


@page
async def home(request: Request, user: User) -> Response:
    return redirect(request, "/runs")


async def favicon(request: Request) -> Response:
    """For a client that asks ``/favicon.ico`` without reading the page's ``<link rel="icon">`` (a bookmark, a
    feed reader): the one icon there is. No login needed, as for the static files."""
    return RedirectResponse("/static/favicon.svg", status_code=301)


def web_routes() -> list[BaseRoute]:
    return [
        Route("/", home),
        Route("/favicon.ico", favicon),
        *auth_routes(),
        *editor_routes(),
        *workflow_routes(),
        *run_routes(),
        *module_routes(),
        *admin_routes(),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
