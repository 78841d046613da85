"""The per-request (per websocket connection) context: the runtime, the caller, and fresh DataLoaders.

DataLoaders are replaced at the start of every operation (``schema.FreshLoaders``), so a long-lived websocket
never serves rows cached by an earlier operation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.types import Info as StrawberryInfo

from aihub.domain.messages import msg
from aihub.graphql.loaders import Loaders
from aihub.logs import new_request_id
from aihub.services.auth import Unauthenticated

if TYPE_CHECKING:
    from aihub.db.models import ApiToken, User
    from aihub.runtime import Runtime


@dataclass
class Context:
    request: Request | WebSocket
    response: Response | WebSocket | None
    runtime: Runtime
    user: User | None = None
    #: the bearer token the caller presented (valid or not)
    token: str | None = None
    #: that token's row when it is valid (its kind decides what it may call: ``aihub.graphql.guards``)
    token_row: ApiToken | None = None
    connection_params: dict[str, Any] | None = None
    #: events a subscriber may fall behind before it is dropped
    subscriber_buffer: int = 10_000
    loaders: Loaders = field(default_factory=Loaders)
    #: names this request in the server log and in ``INTERNAL`` errors (``X-Request-ID`` header)
    request_id: str = field(default_factory=new_request_id)

    def require_user(self) -> User:
        if self.user is not None:
            return self.user
        if self.token:
            raise Unauthenticated(msg("the token is invalid, revoked or expired; log in again"))
        raise Unauthenticated(
            msg("authentication required: send 'Authorization: Bearer <token>' (see login)")
        )


Info = StrawberryInfo[Context, None]


def bearer_token(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value (the scheme is case-insensitive)."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
