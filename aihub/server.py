"""``aihub serve``: uvicorn around ``create_app`` with graceful shutdown (running nodes keep running)."""

from __future__ import annotations

import socket
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from aihub.app import create_app
from aihub.logs import configure_logging
from aihub.settings import Settings


class _Server(uvicorn.Server):
    """Once it listens, says where to go — and a password generated on first start — as its last lines."""

    def __init__(self, config: uvicorn.Config, app: Starlette, settings: Settings) -> None:
        super().__init__(config)
        self.app = app
        self.settings = settings

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.should_exit or not self.started:
            return
        host = self.settings.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        print(f"AIHub Workflow is ready on http://{shown}:{self.settings.port}", flush=True)
        print(f"data dir: {self.settings.data_dir}", flush=True)
        if self.settings.role != "all":
            print(f"role: {self.settings.role}", flush=True)
        state = self.app.state
        if getattr(state, "admin_password", None):
            print(f"created user 'admin' with password: {state.admin_password}", flush=True)
        elif getattr(state, "initial_admin_password", None):
            print(f"user 'admin' still has its first password: {state.initial_admin_password}", flush=True)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """SIGTERM: uvicorn stops listening, lets requests in flight finish and closes WebSockets with 1012
        (service restart: clients reconnect); live SSE streams are ended here first, else they would hold the
        shutdown until its timeout. Then the lifespan closes the engine (nodes keep running) and the bus (the
        engine group is left at once, so other workers take the runs over without a session timeout)."""
        runtime = getattr(self.app.state, "runtime", None)
        if runtime is not None:
            runtime.draining.set()
        await super().shutdown(sockets=sockets)


def behind_proxies(app: ASGIApp, settings: Settings) -> ASGIApp:
    """The app as uvicorn should run it, with ``proxy_headers=False``: uvicorn's own default believes
    ``X-Forwarded-For`` from 127.0.0.1, i.e. from any local process — a node included — which could then pose
    as any address (the login limits count per address). Forwarded headers count only from
    ``AIHUB_TRUSTED_PROXIES``."""
    trusted = [host.strip() for host in settings.trusted_proxies.split(",") if host.strip()]
    return ProxyHeadersMiddleware(app, trusted_hosts=trusted) if trusted else app


#: how ``aihub serve`` runs uvicorn (also used by ``bench/api.py``, so that it measures what users run)
SERVER_OPTIONS: dict[str, Any] = {
    # asyncio's own loop, not uvloop (uvicorn's pick when installed): uvloop's subprocess spawn closes no
    # descriptor, so every process the server starts (node supervisors, podman, git) held the server's
    # listening socket and pipes, and one left running kept a restarted server off its port. The suite
    # runs the engine on asyncio's loop; the server now does too.
    "loop": "asyncio",
    # no per-message compression of WebSocket messages: every subscriber's socket compressed every live event
    # again with its own zlib stream (about 8% of a 200-subscriber fan-out's CPU, raw broadcast included);
    # events are a few hundred bytes
    "ws_per_message_deflate": False,
}


def serve(settings: Settings) -> None:
    configure_logging(settings.log_format)
    app = create_app(settings)
    # uvicorn configures its own loggers unless told not to; JSON lines need every logger to use ours
    logging_options: dict[str, Any] = {"log_config": None} if settings.log_format == "json" else {}
    config = uvicorn.Config(
        behind_proxies(app, settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=10,
        proxy_headers=False,
        **SERVER_OPTIONS,
        **logging_options,
    )
    _Server(config, app, settings).run()
