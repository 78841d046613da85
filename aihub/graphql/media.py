"""The two response media types of the GraphQL-over-HTTP spec, chosen by the request's ``Accept`` header.

- ``application/json`` (the default, and what ``*/*`` gets): every well-formed request is answered 200, errors
  or not; a client reads ``errors``.
- ``application/graphql-response+json`` (when the client prefers it): a *request error* — the document does not
  parse or validate, a variable does not coerce, a limit refuses it: nothing was executed — is answered 400
  with ``errors`` and no ``data``. Once execution started the answer is 200 with ``data`` (possibly null) and
  the field errors, as with ``application/json``.
"""

from __future__ import annotations

from typing import Any

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
_JSON_RANGES = (JSON, "application/*", "*/*")


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                return max(0.0, min(1.0, float(value)))
            except ValueError:
                return 0.0
    return 1.0


def prefers_graphql_response(accept: str | None) -> bool:
    """Whether ``Accept`` ranks ``application/graphql-response+json`` at least as high as ``application/json``
    (ranges such as ``*/*`` count for ``application/json``, the legacy default)."""
    if not accept:
        return False
    graphql_q = json_q = 0.0
    for item in accept.split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        if media == GRAPHQL_RESPONSE:
            graphql_q = max(graphql_q, _quality(params))
        elif media in _JSON_RANGES:
            json_q = max(json_q, _quality(params))
    return graphql_q > 0 and graphql_q >= json_q


def is_request_error(result: Any) -> bool:
    """No data and only errors without a path: the operation never executed."""
    errors = getattr(result, "errors", None)
    return getattr(result, "data", None) is None and bool(errors) and all(e.path is None for e in errors)
