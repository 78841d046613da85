"""``GET /api/runs/{run}/nodes/{node}/outputs/{output}``: download a ``path`` output as its ``.tar.gz``.

The URL is what ``NodeOutput.downloadUrl`` gives; the same bearer token as the GraphQL API authorises it, and
an output the caller may not see is a 404 like a missing one.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from aihub.domain.ids import in_row_id_range
from aihub.graphql.context import bearer_token
from aihub.services.auth import token_row
from aihub.services.errors import ServiceError
from aihub.services.files import output_download

STATUS_CODES = {"FORBIDDEN": 403, "UNAVAILABLE": 503}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def download_output(request: Request) -> Response:
    token = bearer_token(request.headers.get("authorization"))
    row = await token_row(token) if token else None
    if row is None:
        return _error(401, "UNAUTHENTICATED", "authentication required: send 'Authorization: Bearer <token>'")
    params = request.path_params
    if not in_row_id_range(params["run_id"]):
        return _error(404, "NOT_FOUND", f"run {params['run_id']} not found")
    artifacts = request.app.state.runtime.artifacts
    try:
        download = await output_download(
            artifacts, row.user, params["run_id"], params["node"], params["output"], token=row
        )
    except ServiceError as exc:
        return _error(STATUS_CODES.get(exc.code, 404), exc.code, exc.message)
    return StreamingResponse(
        download.chunks,
        media_type="application/gzip",
        headers={"content-disposition": f'attachment; filename="{download.filename}"'},
    )


def download_routes() -> list[BaseRoute]:
    return [Route("/api/runs/{run_id:int}/nodes/{node:str}/outputs/{output:str}", download_output)]
