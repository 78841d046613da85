"""The server's own log lines: text (default) or, with ``AIHUB_LOG_FORMAT=json``, one JSON object a line with
level, time, logger, message, and the request id, run id and node where known (issue 20).

The request id comes from a middleware (the client's ``X-Request-ID`` when it is a short token, else a new one,
which then stands in the request's headers, so GraphQL errors report the same id); run id and node from the
engine, which sets them on the tasks that drive a run or a node.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

request_id_var: ContextVar[str | None] = ContextVar("aihub_request_id", default=None)
run_id_var: ContextVar[int | None] = ContextVar("aihub_run_id", default=None)
node_var: ContextVar[str | None] = ContextVar("aihub_node", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, and ``request_id``,
    ``run_id``, ``node``, ``exception`` when there are."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in (("request_id", request_id_var), ("run_id", run_id_var), ("node", node_var)):
            value = record.__dict__[key] if key in record.__dict__ else var.get()  # extra={...} wins
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    """Send every logger (uvicorn's too, which then must not configure its own) to stderr in ``log_format``."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def new_request_id(client_value: str | None = None) -> str:
    """The client's ``X-Request-ID`` when it is a short token, else a fresh random id."""
    if client_value and _CLIENT_REQUEST_ID.fullmatch(client_value):
        return client_value
    return uuid.uuid4().hex[:16]


class RequestIds:
    """ASGI middleware: each HTTP or WebSocket request gets a request id for its log lines."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k != b"x-request-id"]
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        request_id = new_request_id(given.decode("latin-1") or None)
        scope["headers"] = [
            *headers,
            (b"x-request-id", request_id.encode()),
        ]  # in place: others read the scope
        token = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send)
        finally:
            request_id_var.reset(token)
