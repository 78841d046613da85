"""A request-body limit for every HTTP route: ``413`` with a clear message, before the body is held in memory.

A declared ``Content-Length`` over the limit is refused before anything is read; a body without one (chunked)
is counted as it arrives and refused at the first byte over the limit. Routes that stream their body to disk
(artifact uploads) have their own, larger limit (``AIHUB_MAX_UPLOAD_BYTES``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: bytes of a refused body still read (and dropped) so that a client that is still sending gets the 413
#: instead of a reset connection; a longer body is cut off
DRAIN_BYTES = 32 * 1024**2


class BodyTooLarge(Exception):
    """Raised from ``receive`` when the body passes its limit; turned into a 413 by :class:`BodyLimit`."""

    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(f"the request body is larger than the limit of {limit} bytes ({setting})")
        self.message = str(self)


def too_large_response(path: str, message: str) -> tuple[dict[str, object], bytes]:
    """The 413's head and body: a GraphQL error for ``/graphql``, ``{"error": ...}`` elsewhere."""
    if path == "/graphql":
        payload: object = {"errors": [{"message": message, "extensions": {"code": "PAYLOAD_TOO_LARGE"}}]}
    else:
        payload = {"error": {"code": "PAYLOAD_TOO_LARGE", "message": message}}
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {
        "type": "http.response.start",
        "status": 413,
        "headers": [*headers, (b"connection", b"close")],
    }, body


class BodyLimit:
    """ASGI middleware: ``max_bytes`` for every route, ``own_limits`` (path -> (bytes, setting)) for some."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, own_limits: Mapping[str, tuple[int, str]] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.own_limits = dict(own_limits or {})

    def limit_for(self, path: str) -> tuple[int, str]:
        return self.own_limits.get(path, (self.max_bytes, "AIHUB_MAX_BODY_BYTES"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            if declared <= DRAIN_BYTES:
                await _drain(receive, DRAIN_BYTES)
            await _refuse(scope, send, BodyTooLarge(limit, setting))
            return
        received = 0
        started = False
        more_body = True

        async def counted_receive() -> Message:
            nonlocal received, more_body
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                more_body = message.get("more_body", False)
                if received > limit:
                    raise BodyTooLarge(limit, setting)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as exc:
            if started:
                raise
            if more_body:
                await _drain(receive, DRAIN_BYTES)
            await _refuse(scope, send, exc)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop the rest of a body, at most ``budget`` bytes."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _refuse(scope: Scope, send: Send, exc: BodyTooLarge) -> None:
    start, body = too_large_response(scope["path"], exc.message)
    await send(start)
    await send({"type": "http.response.body", "body": body})
