"""A real server per test: uvicorn in this process on 127.0.0.1:<free port>, with the whole runtime.

Tests talk to it only through its public interfaces: HTTP (``httpx``) and ``graphql-transport-ws``
(``websockets``). Fixture users: ``admin`` (administrator), ``alice`` and ``bob`` (team ``ml``; ``bob``
leads it), ``carol`` (team ``other``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from aihub.db.models import User
from aihub.services import users as users_service
from aihub.services.users import create_user
from aihub.settings import Settings
from tests.graphql.harness import ADMIN_PASSWORD, LOGIN, PASSWORD, Server, start_server, stop_server


@pytest.fixture(autouse=True)
def _fast_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real argon2, with the cheapest parameters: the production cost (~0.5 s a hash here) would dominate
    every test that logs users in. Hashes made with any parameters verify the same way."""
    monkeypatch.setattr(
        users_service, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory nodes see at the same path: not under /tmp, which is private to each node."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else str(Path.home())
    path = Path(tempfile.mkdtemp(prefix="aihub-test-", dir=base))
    path.chmod(0o777)  # nodes run as nobody (the server is root here)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def app_options() -> dict[str, Any]:
    """Override in a test module to pass options to ``create_app``."""
    return {}


@pytest.fixture
async def server(settings: Settings, app_options: dict[str, Any]) -> AsyncIterator[Server]:
    settings.admin_password = ADMIN_PASSWORD
    settings.stop_grace_seconds = 2.0
    uv, task, app = await start_server(settings, **app_options)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}", timeout=60) as http:
            srv = Server(url=f"http://127.0.0.1:{settings.port}", app=app, settings=settings, http=http)
            yield srv
    finally:
        await stop_server(uv, task)


@pytest.fixture
async def users(server: Server) -> Server:
    """``server`` with the fixture users created and logged in (``server.tokens[name]``)."""
    server.users["admin"] = await User.get(username="admin")
    for name, team, leader in (("alice", "ml", False), ("bob", "ml", True), ("carol", "other", False)):
        server.users[name] = await create_user(name, PASSWORD, team=team, leader=leader)
    for name in server.users:
        password = ADMIN_PASSWORD if name == "admin" else PASSWORD
        data = await server.gql(LOGIN, {"u": name, "p": password})
        server.tokens[name] = data["login"]["token"]
    return server
