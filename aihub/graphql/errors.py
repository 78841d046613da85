"""How errors reach clients: a service error becomes a GraphQL error whose ``extensions`` carry ``code`` and
``field``; anything unexpected is logged with its traceback and the request id, and reported as ``INTERNAL``
with that ``requestId`` and nothing of its details.

This is the one place unexpected errors are handled. Resolvers raise; graphql-core turns an ``Exception`` into
a field error (the field's ``null`` plus an entry in ``errors``); ``add_codes`` gives every error its code.
A ``CancelledError`` is not an ``Exception``: one that a resolver meets without its own task being cancelled
(a future it awaited was cancelled by someone else) would escape execution and end the request with a 500, so
``GuardResolvers`` turns it into an ``UnexpectedCancellation`` field error. A real cancellation (the client went
away, or graphql-core cancelling the siblings of a failed field) still propagates.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from tortoise.exceptions import ValidationError

from aihub.bus.base import SubscriberTooSlow
from aihub.logs import new_request_id
from aihub.services.errors import ServiceError, database_connection_lost

log = logging.getLogger("aihub.graphql")

INTERNAL = "INTERNAL"
#: what a client may send as ``X-Request-ID`` to have its own id in our logs


class UnexpectedCancellation(RuntimeError):
    """A resolver met a ``CancelledError`` although its own task was not being cancelled."""


def _camel(name: str) -> str:
    return re.sub(r"_(\w)", lambda m: m.group(1).upper(), name)


def error_extensions(error: GraphQLError) -> dict[str, Any] | None:
    original = error.original_error
    if isinstance(original, ServiceError):
        return {"code": original.code, "field": original.field, **original.details()}
    if isinstance(original, ValidationError):
        # the database layer refused a value the client gave (e.g. a filter longer than the column): bad input
        return {"code": "INVALID_INPUT", "field": _camel(str(original).partition(":")[0]) or None}
    if isinstance(original, SubscriberTooSlow):
        return {"code": "SUBSCRIBER_TOO_SLOW", "field": None}
    return None


def _with_code(error: GraphQLError, request_id: str | None) -> GraphQLError:
    if error.extensions and "code" in error.extensions:
        return error
    extensions = error_extensions(error)
    if extensions is not None:
        error.extensions = {**(error.extensions or {}), **extensions}
        return error
    if error.original_error is None or isinstance(error.original_error, GraphQLError):
        # parse/validation errors and limits: the client's document is at fault
        error.extensions = {**(error.extensions or {}), "code": "BAD_REQUEST"}
        return error
    if database_connection_lost(error.original_error):
        # the database went away under the request (a restart, a failover): nothing is wrong with the request,
        # but a write may or may not have been applied before the loss — the client must look before repeating
        log.warning("the database connection was lost in %s: %s", error.path, error.original_error)
        return GraphQLError(
            "the database connection was lost; try again shortly. A change may have been saved before the "
            "loss: check before repeating it",
            nodes=error.nodes,
            path=error.path,
            extensions={"code": "UNAVAILABLE", "field": None},
        )
    request_id = request_id or new_request_id()
    log.error(
        "unexpected error in %s (request %s)",
        ".".join(map(str, error.path or [])) or "the operation",
        request_id,
        exc_info=error.original_error,
    )
    return GraphQLError(
        f"internal error (logged on the server as request {request_id})",
        nodes=error.nodes,
        path=error.path,
        extensions={"code": INTERNAL, "requestId": request_id},
    )


def add_codes(errors: list[GraphQLError], request_id: str | None = None) -> None:
    """Give every error its ``code`` (and ``field``), in place; unexpected ones are logged with ``request_id``
    and replaced by a masked ``INTERNAL`` one that carries it."""
    for i, error in enumerate(errors):
        errors[i] = _with_code(error, request_id)


def request_id_of(context: object) -> str | None:
    return getattr(context, "request_id", None)


def _fix(result: object, request_id: str | None) -> None:
    errors = getattr(result, "errors", None)
    if errors:
        add_codes(errors, request_id)


class ErrorCodes(SchemaExtension):
    """Adds ``code``/``field`` to every error of a single result. Streamed results (each live event) are not
    hooked here: Strawberry hands every error list of a streamed result to ``AIHubSchema.process_errors``,
    which adds the codes, and a per-result hook cost every subscriber of every event a context manager
    (issue 18; ``tests/graphql/test_subscriptions.py`` checks the codes of streamed errors)."""

    def on_operation(self) -> Iterator[None]:
        yield
        _fix(self.execution_context.result, request_id_of(self.execution_context.context))


async def _not_cancelled_by_others(awaitable: Awaitable[Any]) -> Any:
    try:
        return await awaitable
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # this task is being cancelled: let it end
        raise UnexpectedCancellation("a resolver was cancelled by something other than its request") from exc


class GuardResolvers(SchemaExtension):
    """Every asynchronous resolver's result awaited through ``_not_cancelled_by_others`` (module docstring)."""

    def resolve(self, _next: Callable[..., Any], root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
        result = _next(root, info, *args, **kwargs)
        if inspect.isawaitable(result):
            return _not_cancelled_by_others(result)
        return result
