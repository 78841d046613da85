"""How errors reach clients: a service error becomes a GraphQL error whose ``extensions`` carry ``code`` and
``field``; anything unexpected is logged and reported as ``INTERNAL`` without leaking its details.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from aihub.bus.base import SubscriberTooSlow
from aihub.services.errors import ServiceError

log = logging.getLogger("aihub.graphql")


def error_extensions(error: GraphQLError) -> dict[str, Any] | None:
    original = error.original_error
    if isinstance(original, ServiceError):
        return {"code": original.code, "field": original.field, **original.details()}
    if isinstance(original, SubscriberTooSlow):
        return {"code": "SUBSCRIBER_TOO_SLOW", "field": None}
    return None


def _with_code(error: GraphQLError) -> GraphQLError:
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
    return GraphQLError(
        "internal error (logged on the server)",
        nodes=error.nodes,
        path=error.path,
        extensions={"code": "INTERNAL"},
    )


def add_codes(errors: list[GraphQLError]) -> None:
    """Give every error its ``code`` (and ``field``), in place; unexpected ones are replaced by a masked one."""
    for i, error in enumerate(errors):
        errors[i] = _with_code(error)


def _fix(result: object) -> None:
    errors = getattr(result, "errors", None)
    if errors:
        add_codes(errors)


class ErrorCodes(SchemaExtension):
    """Adds ``code``/``field`` to every error, for single results and for each streamed one (errors that end
    an operation early are handled by ``AIHubSchema.process_errors``, which sees every error list)."""

    def on_operation(self) -> Iterator[None]:
        yield
        _fix(self.execution_context.result)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        _fix(result)
        yield
