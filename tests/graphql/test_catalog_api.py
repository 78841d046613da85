"""Module catalogue reads: owners see their modules in any state, everybody sees published ones, admins all;
review records for admins (all), team leaders (their team's) and members (their own)."""

from __future__ import annotations

import pytest

from aihub.db.models import Category, Module, ModuleBuild, ModuleReview, ModuleStatus
from tests.graphql.harness import Server

pytestmark = pytest.mark.usefixtures("users")

MODULES = "{ modules { name status owner { username } category { name } builds { number } } }"


async def seed(users: Server) -> dict[str, int]:
    category = await Category.create(name="vision")
    ids: dict[str, int] = {}
    for name, owner, status in (
        ("alice-draft", "alice", ModuleStatus.BUILT),
        ("alice-public", "alice", ModuleStatus.PUBLISHED),
        ("carol-draft", "carol", ModuleStatus.PENDING_REVIEW),
    ):
        module = await Module.create(
            name=name, category=category, owner=users.users[owner], git_url="file:///repo", status=status
        )
        published = status is ModuleStatus.PUBLISHED
        build = await ModuleBuild.create(module=module, number=1, status="BUILT", published=published)
        ids[name] = module.id
        if status is not ModuleStatus.BUILT:
            await ModuleReview.create(module=module, build=build, requester=users.users[owner])
    return ids


async def test_module_visibility(users: Server) -> None:
    ids = await seed(users)
    seen = {
        who: [m["name"] for m in (await users.gql(MODULES, as_=who))["modules"]]
        for who in ("admin", "alice", "bob", "carol")
    }
    assert seen == {
        "admin": ["alice-draft", "alice-public", "carol-draft"],
        "alice": ["alice-draft", "alice-public"],
        "bob": ["alice-public"],
        "carol": ["alice-public", "carol-draft"],
    }
    one = (await users.gql(MODULES, as_="alice"))["modules"][0]
    assert one == {
        "name": "alice-draft",
        "status": "BUILT",
        "owner": {"username": "alice"},
        "category": {"name": "vision"},
        "builds": [{"number": 1}],
    }
    query = "query($id: ID!) { module(id: $id) { name } }"
    assert (await users.gql(query, {"id": ids["alice-draft"]}, as_="carol"))["module"] is None
    assert (await users.gql(query, {"id": ids["alice-draft"]}, as_="alice"))["module"] == {
        "name": "alice-draft"
    }
    filtered = '{ modules(status: PUBLISHED, search: "PUB", category: "vision") { name } }'
    assert (await users.gql(filtered, as_="carol"))["modules"] == [{"name": "alice-public"}]


async def test_review_records_by_role(users: Server) -> None:
    await seed(users)
    query = "{ moduleReviews { status module { name } requester { username } reviewer { username } } }"
    seen = {
        who: [r["module"]["name"] for r in (await users.gql(query, as_=who))["moduleReviews"]]
        for who in ("admin", "alice", "bob", "carol")
    }
    assert seen == {
        "admin": ["carol-draft", "alice-public"],
        "alice": ["alice-public"],
        "bob": ["alice-public"],  # bob leads alice's team
        "carol": ["carol-draft"],
    }
    pending = "{ moduleReviews(pendingOnly: true) { status reviewer { username } } }"
    assert (await users.gql(pending, as_="carol"))["moduleReviews"] == [
        {"status": "PENDING", "reviewer": None}
    ]
