"""Typed errors of the use cases. Adapters map them: GraphQL errors with ``code``/``field``, HTTP 4xx."""

from __future__ import annotations

from aihub.db.retry import is_connection_error


def database_connection_lost(exc: BaseException) -> bool:
    """The database connection was lost under the request (a restart, a failover): adapters answer "unavailable,
    try again" — and, for a write, that it may have been applied (``aihub.db.pg``)."""
    return is_connection_error(exc)


class ServiceError(Exception):
    code = "ERROR"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def details(self) -> dict[str, object]:
        """Extra machine-readable facts for clients (GraphQL ``extensions``), beyond ``code`` and ``field``."""
        return {}


class NotFound(ServiceError):
    """Missing, or not visible to the caller (an unauthorised read looks exactly like a missing object)."""

    code = "NOT_FOUND"


class Forbidden(ServiceError):
    """Visible but not allowed (e.g. a member reviewing their own module)."""

    code = "FORBIDDEN"


class InvalidInput(ServiceError):
    code = "INVALID_INPUT"


class Conflict(ServiceError):
    """The object is in a state that does not allow the request (retry a RUNNING run, stop a finished one)."""

    code = "CONFLICT"


class Unavailable(ServiceError):
    """A store the request needs does not answer now (object store away); trying again later may work."""

    code = "UNAVAILABLE"
