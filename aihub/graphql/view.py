"""The ASGI GraphQL endpoint: HTTP (GraphiQL in a browser) and ``graphql-transport-ws`` (legacy protocol off).

HTTP requests authenticate with ``Authorization: Bearer <token>``; websockets with the token in the
``connection_init`` payload (``{"Authorization": "Bearer <token>"}`` or ``{"token": "<token>"}``). A websocket
without a valid token is closed with 4403.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET

from aihub.graphql.context import Context, bearer_token
from aihub.graphql.fastpath import FastQueries
from aihub.graphql.ide import ide_html, secure_ide_page
from aihub.graphql.media import GRAPHQL_RESPONSE, is_request_error, prefers_graphql_response
from aihub.graphql.prebuilt import next_message_text
from aihub.graphql.schema import build_schema
from aihub.logs import new_request_id
from aihub.services.auth import token_row

DEFAULT_SUBSCRIBER_BUFFER = 10_000


class GraphQLView(GraphQL):
    def __init__(self, *, subscriber_buffer: int = DEFAULT_SUBSCRIBER_BUFFER, **limits: Any) -> None:
        super().__init__(
            build_schema(**limits),
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            max_subscriptions_per_connection=500,
        )
        self.subscriber_buffer = subscriber_buffer
        self.fast_queries: FastQueries = self.schema.fast_queries  # type: ignore[attr-defined]

    async def run(self, request: Request | WebSocket, context: Any = UNSET, root_value: Any = UNSET) -> Any:  # type: ignore[override]
        """A POST of a simple document is answered on its precompiled path when it can be
        (``aihub.graphql.fastpath``); everything else, and that request when it cannot, by Strawberry."""
        if context is UNSET and request.scope["type"] == "http" and request.scope["method"] == "POST":
            response = await self.fast_queries.answer(self, request)  # type: ignore[arg-type]
            if response is not None:
                return response
        return await super().run(request, context, root_value)  # type: ignore[arg-type]

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:  # type: ignore[override]
        is_http = isinstance(request, Request)
        context = Context(
            request=request,
            response=response,
            runtime=request.app.state.runtime,
            subscriber_buffer=self.subscriber_buffer,
            # an HTTP request's own id (one random id less per request); a websocket's a fresh one
            request_id=new_request_id(request.headers.get("x-request-id") if is_http else None),
        )
        if is_http:
            if isinstance(response, Response):
                response.headers["x-request-id"] = context.request_id
                if prefers_graphql_response(request.headers.get("accept")):
                    response.media_type = GRAPHQL_RESPONSE
            context.token = bearer_token(request.headers.get("authorization"))
            if context.token:
                context.token_row = await token_row(context.token)
                context.user = context.token_row.user if context.token_row else None
        return context

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:  # type: ignore[override]
        data = await super().process_result(request, result)
        if is_request_error(result) and prefers_graphql_response(request.headers.get("accept")):
            data.pop("data", None)  # nothing was executed: the spec's request error has no data entry
        return data

    def create_response(
        self, response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse], sub_response: Response
    ) -> Response:
        """``application/graphql-response+json`` when the client asked for it, 400 for a request error
        (``aihub.graphql.media``); ``application/json`` and 200 otherwise."""
        response = super().create_response(response_data, sub_response)
        if sub_response.media_type == GRAPHQL_RESPONSE:
            response.headers["content-type"] = f"{GRAPHQL_RESPONSE}; charset=utf-8"
            if isinstance(response_data, dict) and "data" not in response_data:
                response.status_code = 400
        return response

    def encode_json(self, data: object) -> str | bytes:
        """A live event's ``next`` message from the event's JSON made once for all subscribers
        (``aihub.graphql.prebuilt``); anything else as Strawberry encodes it."""
        return next_message_text(data) or super().encode_json(data)

    async def render_graphql_ide(self, request: Request) -> Response:
        """GraphiQL with a Content-Security-Policy and no framing (``aihub.graphql.ide``)."""
        return secure_ide_page(ide_html())

    async def on_ws_connect(self, context: Context) -> dict[str, object] | None:  # type: ignore[override]
        params = context.connection_params or {}
        token = params.get("token") or bearer_token(
            _str(params.get("Authorization") or params.get("authorization"))
        )
        row = await token_row(token) if isinstance(token, str) and token else None
        if row is None:
            raise ConnectionRejectionError({"message": "a valid token is required"})
        context.token, context.user, context.token_row = token, row.user, row  # type: ignore[assignment]
        return {"user": row.user.username}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
