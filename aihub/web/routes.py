"""Web routes. (The full UI lands with the web issue; until then a landing page.)"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Route

from aihub import __version__


async def home(request: Request) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html><head><meta charset='utf-8'><title>AIHub Workflow</title></head>"
        f"<body><h1>AIHub Workflow</h1><p>version {__version__}</p>"
        "<p><a href='/graphql'>GraphQL API</a> · <a href='/healthz'>health</a></p></body></html>"
    )


def web_routes() -> list[BaseRoute]:
    return [Route("/", home)]
