"""``create_app(settings)``: the one ASGI application — GraphQL API, web pages, engine in the lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route, WebSocketRoute

from aihub.bodylimit import BodyLimit
from aihub.graphql.view import DEFAULT_SUBSCRIBER_BUFFER, GraphQLView
from aihub.health import health, readiness
from aihub.logs import RequestIds
from aihub.metrics import Metrics, RequestMetrics, metrics_endpoint
from aihub.runtime import open_runtime
from aihub.services.users import ensure_admin, initial_admin_password
from aihub.settings import Settings
from aihub.web.artifacts import UPLOAD_PATH, artifact_routes
from aihub.web.downloads import download_routes
from aihub.web.routes import web_routes

log = logging.getLogger("aihub")


def create_app(
    settings: Settings,
    *,
    run_engine: bool = True,
    subscriber_buffer: int = DEFAULT_SUBSCRIBER_BUFFER,
    **graphql_limits: Any,
) -> Starlette:
    """The application of ``settings.role``: ``all`` (API, UI and engine), ``api`` (API and UI; runs are driven
    elsewhere) or ``worker`` (engine and builds, serving only health, readiness and metrics).
    ``run_engine=False`` makes ``all`` an ``api``. ``subscriber_buffer`` and ``graphql_limits`` (``max_depth``,
    ``max_tokens``, ``max_aliases``, ``max_cost``, ``max_log_bytes``) tune the GraphQL endpoint."""
    role = settings.role if run_engine or settings.role == "worker" else "api"
    drives_runs = role != "api"
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # a worker runs the builds that API replicas requested (an `all` process runs its own)
        pick_up = role == "worker"
        async with open_runtime(settings, run_engine=drives_runs, metrics=metrics, pick_up=pick_up) as rt:
            app.state.runtime = rt
            if role == "worker":  # users are the API's business
                app.state.admin_password = app.state.initial_admin_password = None
                log.info("role worker: driving runs and builds; serving /healthz, /readyz, /metrics")
                yield
                return
            if role == "api":
                log.info("role api: runs are driven by the engine workers (AIHUB_ROLE=worker)")
            # printed by `aihub serve` after the server listens: once when generated, then on every start
            # while it is still the one in force
            app.state.admin_password = await ensure_admin(settings)
            app.state.initial_admin_password = app.state.admin_password or await initial_admin_password(
                settings
            )
            yield

    routes = [
        Route("/healthz", health),
        Route("/readyz", readiness),
        Route("/metrics", metrics_endpoint(metrics, settings.metrics_token)),
    ]
    if role != "worker":
        graphql_limits.setdefault("max_cost", settings.max_query_cost)
        graphql_limits.setdefault("max_log_bytes", settings.max_query_log_bytes)
        graphql = GraphQLView(subscriber_buffer=subscriber_buffer, **graphql_limits)
        routes += [
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            *download_routes(),
            *artifact_routes(),
            *web_routes(),
        ]
    body_limit = Middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        own_limits={UPLOAD_PATH: (settings.max_upload_bytes, "AIHUB_MAX_UPLOAD_BYTES")},
    )
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(RequestMetrics, metrics=metrics), Middleware(RequestIds), body_limit],
    )
    app.state.metrics = metrics
    app.state.role = role
    app.state.drives_runs = drives_runs
    return app
