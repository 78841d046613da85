"""Page links on the lists the services return whole: modules, admin users and teams."""

from __future__ import annotations

import re

import pytest

from aihub.db.models import Category, Module, Team, User
from aihub.services.users import create_user
from aihub.web import paging
from tests.web.webapp import Web


@pytest.fixture(autouse=True)
def _small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paging, "PAGE_SIZE", 3)


def _next(html: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" rel="next">', html)
    return found.group(1).replace("&amp;", "&") if found else None


async def _walk(client: object, url: str, pattern: str) -> list[str]:
    seen: list[str] = []
    next_url: str | None = url
    while next_url:
        html = (await client.get(next_url)).text  # type: ignore[attr-defined]
        rows = re.findall(pattern, html)
        assert 0 < len(rows) <= 3, rows
        seen += rows
        next_url = _next(html)
    return seen


async def test_admin_users_are_paged(web: Web) -> None:
    for i in range(5):
        await create_user(f"user{i}", "password-1234")
    client = await web.client("admin")
    names = await _walk(client, "/admin/users", r'<tr id="user-(\w+)"')
    expected = sorted(u.username for u in await User.all())
    assert sorted(names) == expected and len(names) == len(set(names)) == len(expected) > 3


async def test_admin_teams_are_paged(web: Web) -> None:
    for i in range(5):
        await Team.create(name=f"team{i}")
    client = await web.client("admin")
    names = await _walk(client, "/admin/teams", r'<tr id="team-(\w+)"')
    expected = sorted(t.name for t in await Team.all())
    assert sorted(names) == expected and len(expected) > 3


async def test_modules_are_paged_keeping_the_filters(web: Web, category: Category) -> None:
    alice = await User.get(username="alice")
    for i in range(7):
        await Module.create(
            name=f"mod{i}", category=category, owner=alice, git_url="file:///x", description=""
        )
    client = await web.client("alice")
    first = (await client.get("/modules?scope=mine")).text
    assert "scope=mine" in (_next(first) or "")
    names = await _walk(client, "/modules?scope=mine", r'id="module-row-(\w+)"')
    assert sorted(names) == [f"mod{i}" for i in range(7)]
