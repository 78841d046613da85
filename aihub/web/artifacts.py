"""``GET /artifacts/{digest}`` and ``POST /artifacts/upload``: what pods of the Kubernetes executor call
(contract in docs/kubernetes.md). Bodies are streamed to disk, never held in memory."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import aiofiles
import aiofiles.os
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from aihub.domain.ids import parse_row_id
from aihub.services.artifacts import check_upload, checked_artifact, store_upload
from aihub.services.errors import ServiceError
from aihub.services.tokens import valid_token

if TYPE_CHECKING:
    from aihub.db.models import ApiToken

UPLOAD_PATH = "/artifacts/upload"
STATUS_CODES = {"NOT_FOUND": 404, "INVALID_INPUT": 400, "FORBIDDEN": 403, "UNAVAILABLE": 503}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _token(request: Request) -> ApiToken | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value:
        return None
    return await valid_token(value.strip())


async def get_artifact(request: Request) -> Response:
    token = await _token(request)
    if token is None:
        return _error(401, "a valid Bearer token is required")
    run = request.query_params.get("run")
    run_id = parse_row_id(run) if run else None
    if run and run_id is None:
        return _error(400, "run must be a run id (a positive number)")
    artifacts = request.app.state.runtime.artifacts
    try:
        digest = await checked_artifact(token, request.path_params["digest"], artifacts, run_id)
    except ServiceError as exc:
        return _error(STATUS_CODES.get(exc.code, 403), exc.message)
    # the store checks the sha256 as the bytes go out: a corrupt object ends the response early (the client
    # sees a broken download, never a complete wrong one)
    return StreamingResponse(artifacts.stream(digest), media_type="application/gzip")


async def upload_artifact(request: Request) -> Response:
    token = await _token(request)
    if token is None:
        return _error(401, "a valid Bearer token is required")
    kind = request.query_params.get("kind")
    try:
        check_upload(token, kind)
    except ServiceError as exc:
        return _error(STATUS_CODES.get(exc.code, 403), exc.message)
    rt = request.app.state.runtime
    staging = rt.settings.data_dir / "uploads"
    await aiofiles.os.makedirs(staging, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="upload-", suffix=".tar.gz", dir=staging)
    upload = Path(name)
    try:
        size = 0
        async with aiofiles.open(fd, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > rt.settings.max_upload_bytes:
                    limit = rt.settings.max_upload_bytes
                    return _error(413, f"the upload is larger than {limit} bytes (AIHUB_MAX_UPLOAD_BYTES)")
                await out.write(chunk)
        try:
            digest, stored = await store_upload(token, upload, kind, rt.artifacts, rt.repack_upload)
        except ServiceError as exc:
            return _error(STATUS_CODES.get(exc.code, 403), exc.message)
        return JSONResponse({"digest": digest, "size": stored})
    finally:
        with contextlib.suppress(FileNotFoundError):
            await aiofiles.os.remove(upload)


def artifact_routes() -> list[BaseRoute]:
    return [
        Route(UPLOAD_PATH, upload_artifact, methods=["POST"]),
        Route("/artifacts/{digest:str}", get_artifact, methods=["GET"]),
    ]
