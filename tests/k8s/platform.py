"""The two routes of the platform's API a pod's wrapper calls, for tests (SPEC of them: docs/kubernetes.md).

``GET /artifacts/{digest}`` serves a stored archive; ``POST /artifacts/upload?kind=file|dir&output=NAME``
stores an uploaded output through :func:`aihub.engine.executors.k8s_artifacts.store_uploaded_output` and
answers ``{"digest": ..., "size": ...}``. Both want ``Authorization: Bearer <token>``; ``check_token`` says
which tokens are good (default: any non-empty one).
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from aihub.engine.artifacts import ArtifactError
from aihub.engine.executors.k8s_artifacts import store_uploaded_output
from aihub.storage.base import ArtifactStore

TokenCheck = Callable[[str], Awaitable[bool]]


async def _any_token(token: str) -> bool:
    return bool(token)


class Platform:
    def __init__(self, artifacts: ArtifactStore, work: Path, check_token: TokenCheck = _any_token) -> None:
        self.artifacts = artifacts
        self.work = work
        self.check_token = check_token
        self.requests: list[tuple[str, str, str]] = []  # (method, path, token)
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def serve(self) -> str:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_get("/artifacts/{digest}", self._download)
        app.router.add_post("/artifacts/upload", self._upload)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        self.requests.append((request.method, request.path, token))
        return await self.check_token(token)

    async def _download(self, request: web.Request) -> web.StreamResponse:
        if not await self._authorised(request):
            return web.json_response({"error": "unauthorised"}, status=401)
        try:
            path = self.artifacts.path(request.match_info["digest"])
        except KeyError:
            return web.json_response({"error": "no such artifact"}, status=404)
        return web.FileResponse(path, headers={"Content-Type": "application/gzip"})

    async def _upload(self, request: web.Request) -> web.Response:
        if not await self._authorised(request):
            return web.json_response({"error": "unauthorised"}, status=401)
        kind = request.query.get("kind", "")
        if kind not in ("file", "dir"):
            return web.json_response({"error": "kind must be file or dir"}, status=400)
        self.work.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.work, suffix=".tar.gz", delete=False) as f:
            upload = Path(f.name)
            while chunk := await request.content.read(1 << 20):
                f.write(chunk)
        try:
            digest, size = await store_uploaded_output(upload, kind, self.artifacts)  # type: ignore[arg-type]
        except ArtifactError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        finally:
            upload.unlink(missing_ok=True)
        return web.json_response({"digest": digest, "size": size})
