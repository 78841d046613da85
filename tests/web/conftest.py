"""In-process web tests: the ASGI app (``create_app``) with its whole runtime, driven through httpx's ASGI
transport, on a fresh SQLite database per test.

``web.client("alice")`` is a logged-in browser-like client (cookies, CSRF token added to every post,
``htmx=True`` sends the headers htmx sends). Fixture users: ``admin``; ``alice`` and ``bob`` in team ``ml``
(``bob`` leads it); ``carol`` in team ``other``. Module repositories are real git repositories (``file://``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from aihub.app import create_app
from aihub.db.models import Category
from aihub.services import users as users_service
from aihub.services.users import create_user
from aihub.settings import Settings
from tests.web.webapp import ADMIN_PASSWORD, PASSWORD, USERS, Web


@pytest.fixture(autouse=True)
def _fast_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real argon2 with its cheapest parameters: the production cost would dominate tests that log in."""
    monkeypatch.setattr(
        users_service, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        admin_password=ADMIN_PASSWORD,
        allow_file_git=True,
        stop_grace_seconds=2.0,
    )


@pytest.fixture
async def web(settings: Settings) -> AsyncIterator[Web]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        for name, team, leader in USERS:
            await create_user(name, PASSWORD, team=team, leader=leader)
        web = Web(app, settings)
        try:
            yield web
        finally:
            for http in web.clients:
                await http.aclose()


@pytest.fixture
async def category(web: Web) -> Category:
    return await Category.create(name="data-processing")
