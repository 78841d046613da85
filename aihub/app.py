"""``create_app(settings)``: the one ASGI application — GraphQL API, web pages, engine in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aihub import __version__
from aihub.runtime import open_runtime
from aihub.services.users import ensure_admin
from aihub.settings import Settings
from aihub.web.routes import web_routes


async def health(request: Request) -> Response:
    rt = request.app.state.runtime
    return JSONResponse(
        {
            "status": "ok",
            "version": __version__,
            "executor": rt.settings.executor,
            "bus": rt.settings.bus,
            "active_runs": len(rt.engine.runs),
        }
    )


def create_app(settings: Settings, *, run_engine: bool = True) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_runtime(settings, run_engine=run_engine) as rt:
            app.state.runtime = rt
            password = await ensure_admin(settings)
            if password:
                print(f"created user 'admin' with password: {password}", flush=True)
            yield

    routes = [Route("/healthz", health), *web_routes()]
    return Starlette(routes=routes, lifespan=lifespan)
