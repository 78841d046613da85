"""Helpers of the in-process web tests (fixtures are in ``conftest.py``): a logged-in client, the app with its
runtime, real git repositories for modules."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from aihub.db.models import Module, ModuleBuild
from aihub.runtime import Runtime
from aihub.settings import Settings

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
ADMIN_PASSWORD = "admin-password-1"
PASSWORD = "password-1234"
USERS = (("alice", "ml", False), ("bob", "ml", True), ("carol", "other", False))


class Client:
    """A logged-in user's browser: cookies kept, the CSRF token sent with every post."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    @property
    def csrf(self) -> str:
        return self.http.cookies["aihub_csrf"]

    @staticmethod
    def _headers(htmx: bool) -> dict[str, str]:
        return {"HX-Request": "true"} if htmx else {}

    async def get(self, url: str, *, htmx: bool = False) -> httpx.Response:
        return await self.http.get(url, headers=self._headers(htmx))

    async def post(
        self, url: str, data: Mapping[str, Any] | None = None, *, htmx: bool = False, csrf: bool = True
    ) -> httpx.Response:
        body = dict(data or {})
        if csrf:
            body.setdefault("csrf_token", self.csrf)
        return await self.http.post(url, data=body, headers=self._headers(htmx))


@dataclass
class Web:
    app: Starlette
    settings: Settings
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    @property
    def rt(self) -> Runtime:
        return self.app.state.runtime  # type: ignore[no-any-return]

    def anonymous(self) -> Client:
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://testserver", timeout=60
        )
        self.clients.append(http)
        return Client(http)

    async def client(self, username: str = "admin") -> Client:
        """A fixture user, logged in."""
        return await self.client_for(username, ADMIN_PASSWORD if username == "admin" else PASSWORD)

    async def client_for(self, username: str, password: str) -> Client:
        client = self.anonymous()
        await client.get("/login")
        response = await client.post("/login", {"username": username, "password": password, "next": "/"})
        assert response.status_code == 303, response.text
        return client


def example(name: str = "pass-params-demo") -> str:
    return (EXAMPLES / f"{name}.yaml").read_text()


# ------------------------------------------------------------------------------------------------ modules


@dataclass
class GitRepo:
    path: Path

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def git(self, *args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
            cwd=self.path,
            check=True,
            capture_output=True,
        )


def make_repo(where: Path, module: str = "hash-file") -> GitRepo:
    """A real git repository holding ``examples/modules/<module>`` at its root, committed on ``main``."""
    repo = GitRepo(where)
    shutil.copytree(EXAMPLES / "modules" / module, where)
    repo.git("init", "-q", "-b", "main")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "initial")
    return repo


HASH_FILE_FORM = {
    "category": "data-processing",
    "name": "hash-file",
    "description": "hex digest of a file",
    "ref": "main",
    "dockerfile_path": "Dockerfile",
    "build_context": ".",
    "readme_path": "README.md",
    "inputs-0-name": "input_file",
    "inputs-0-description": "path of the file to hash",
    "inputs-1-name": "algorithm",
    "inputs-1-description": "hashlib algorithm",
    "outputs-0-name": "digest",
    "outputs-0-path": "/tmp/workflow_space/hash-file/digest.txt",
    "outputs-0-type": "text",
    "outputs-0-description": "the hex digest",
    "env-0-key": "PYTHONUNBUFFERED",
    "env-0-value": "1",
}


async def wait_built(module_name: str, web: Web) -> Module:
    """The module once its build has finished (awaiting the build manager's task, not sleeping)."""
    module = await Module.get(name=module_name)
    build = await ModuleBuild.filter(module_id=module.id).order_by("-number").first()
    assert build is not None
    await web.rt.builds.wait(build.id)
    return await Module.get(id=module.id)
