"""Administration pages: only for administrators (404 for everybody else); every change, and every refusal
shown next to the field it concerns with what was typed kept."""

from __future__ import annotations

import html
import re

import pytest

from aihub.db.models import Category, DataStorage, Module, Team, User, VirtualCluster
from tests.web.webapp import Client, Web


def error_of(text: str, key: str) -> str:
    match = re.search(rf'<p class="field-error" id="err-{re.escape(key)}">(.*?)</p>', text, re.S)
    assert match, f"no error next to {key}"
    return html.unescape(match[1])


async def refused(client: Client, url: str, data: dict[str, str], key: str, status: int = 400) -> str:
    response = await client.post(url, data)
    assert response.status_code == status, response.text
    return error_of(response.text, key)


@pytest.mark.parametrize(
    "url",
    ["/admin", "/admin/users", "/admin/teams", "/admin/categories", "/admin/clusters", "/admin/storages"],
)
async def test_admin_pages_do_not_exist_for_others(web: Web, url: str) -> None:
    alice = await web.client("alice")
    assert (await alice.get(url)).status_code == 404
    assert 'href="/admin"' not in (await alice.get("/workflows")).text
    admin = await web.client("admin")
    assert (await admin.get(url, htmx=False)).status_code in (200, 303)


async def test_others_cannot_change_anything(web: Web) -> None:
    bob = await web.client("bob")
    for url in ("/admin/teams/new", "/admin/categories/new", "/admin/users/new"):
        assert (
            await bob.post(url, {"name": "x", "username": "x", "password": "password-1"})
        ).status_code == 404
    team = await Team.get(name="ml")
    assert (await bob.post(f"/admin/teams/{team.id}/delete")).status_code == 404
    assert await Team.filter(name="ml").exists() and not await Category.exists()


async def test_users_are_added_and_edited(web: Web) -> None:
    admin = await web.client("admin")
    ml = await Team.get(name="ml")
    page = await admin.get("/admin/users")
    assert 'id="user-alice"' in page.text and f'<option value="{ml.id}" selected>ml</option>' in page.text
    created = await admin.post(
        "/admin/users/new",
        {"username": "dave", "password": "password-1234", "team_id": str(ml.id), "is_team_leader": "on"},
    )
    assert created.status_code == 303
    dave = await User.get(username="dave")
    assert dave.team_id == ml.id and dave.is_team_leader and not dave.is_admin  # type: ignore[attr-defined]
    assert (await web.client_for("dave", "password-1234")).csrf  # the new user can log in
    message = await refused(
        admin,
        "/admin/users/new",
        {"username": "erin", "password": "password-1234", "is_team_leader": "on"},
        "new-is_team_leader",
    )
    assert "needs a team" in message
    response = await admin.post("/admin/users/new", {"username": "dave", "password": "password-1234"})
    assert response.status_code == 409 and "already exists" in error_of(response.text, "new-username")
    short = await admin.post("/admin/users/new", {"username": "frank", "password": "short"})
    assert "at least 8" in error_of(short.text, "new-password")
    assert 'id="new-username" name="username" value="frank"' in short.text  # what was typed is kept
    carol = await User.get(username="carol")
    edited = await admin.post(
        f"/admin/users/{carol.id}",
        {"display_name": "Carol C", "team_id": str(ml.id), "is_team_leader": "on", "is_active": "on"},
    )
    assert edited.status_code == 303
    carol = await User.get(id=carol.id)
    assert carol.team_id == ml.id and carol.is_team_leader and carol.display_name == "Carol C"  # type: ignore[attr-defined]
    me = await User.get(username="admin")
    message = await refused(admin, f"/admin/users/{me.id}", {"is_active": "on"}, f"u{me.id}-form")
    assert "your own administrator rights" in message
    assert (await User.get(id=me.id)).is_admin
    alone = await refused(
        admin,
        f"/admin/users/{carol.id}",
        {"is_team_leader": "on", "is_active": "on"},
        f"u{carol.id}-is_team_leader",
    )
    assert "needs a team" in alone


async def test_teams_are_added_renamed_and_deleted(web: Web) -> None:
    admin = await web.client("admin")
    assert (await admin.post("/admin/teams/new", {"name": "vision", "peer_review": "on"})).status_code == 303
    team = await Team.get(name="vision")
    assert team.peer_review
    page = (await admin.get("/admin/teams")).text
    assert 'id="team-ml"' in page and "bob ★" in page
    assert "invalid team name" in await refused(admin, "/admin/teams/new", {"name": "Bad Name"}, "new-name")
    taken = await refused(admin, f"/admin/teams/{team.id}", {"name": "ml"}, f"t{team.id}-name", status=409)
    assert "already exists" in taken
    assert (await admin.post(f"/admin/teams/{team.id}", {"name": "vision2"})).status_code == 303
    team = await Team.get(id=team.id)
    assert team.name == "vision2" and not team.peer_review
    assert (await admin.post(f"/admin/teams/{team.id}/delete")).status_code == 303
    assert not await Team.filter(id=team.id).exists()
    missing = await admin.post("/admin/teams/999/delete")
    assert missing.status_code == 404 and "not found" in error_of(missing.text, "page")


async def test_categories(web: Web) -> None:
    admin = await web.client("admin")
    assert (
        await admin.post("/admin/categories/new", {"name": "vision", "description": "images"})
    ).status_code == 303
    category = await Category.get(name="vision")
    assert "invalid category name" in await refused(
        admin, "/admin/categories/new", {"name": "Vision!"}, "new-name"
    )
    await admin.post(f"/admin/categories/{category.id}", {"name": "vision", "description": "pictures"})
    assert (await Category.get(id=category.id)).description == "pictures"
    owner = await User.get(username="alice")
    await Module.create(name="m", category=category, owner=owner, git_url="https://h/x")
    used = await refused(
        admin, f"/admin/categories/{category.id}/delete", {}, f"c{category.id}-form", status=409
    )
    assert "still has modules" in used


async def test_virtual_clusters(web: Web) -> None:
    admin = await web.client("admin")
    values = {"name": "rtx2080x8", "gpu": "1", "gpu_type": "rtx2080", "cpu": "10", "memory_mib": "81920"}
    created = await admin.post(
        "/admin/clusters/new", {**values, "capacity": "8", "node_selector": "pool=gpu\n"}
    )
    assert created.status_code == 303
    cluster = await VirtualCluster.get(name="rtx2080x8")
    assert (cluster.cpu_millis, cluster.memory_mib, cluster.capacity) == (10000, 81920, 8)
    assert cluster.node_selector == {"pool": "gpu"}
    editor = (await (await web.client("alice")).get("/workflows/new?view=form")).text
    assert '<option value="rtx2080x8">rtx2080x8 (1 GPU, 10 CPU, 81920 MiB)</option>' in editor
    assert "must be at least 0" in await refused(
        admin, "/admin/clusters/new", {"name": "c2", "gpu": "-1"}, "new-gpu"
    )
    assert "number of cores" in await refused(
        admin, "/admin/clusters/new", {"name": "c2", "cpu": "ten"}, "new-cpu"
    )
    assert "whole number" in await refused(
        admin, "/admin/clusters/new", {"name": "c2", "capacity": "x"}, "new-capacity"
    )
    bad = await refused(
        admin, "/admin/clusters/new", {"name": "c2", "node_selector": "oops"}, "new-node_selector"
    )
    assert "key=value" in bad
    assert "built-in" in await refused(admin, "/admin/clusters/new", {"name": "local"}, "new-name")
    fid = f"k{cluster.id}"
    assert (
        await admin.post(f"/admin/clusters/{cluster.id}", {**values, "capacity": "16"})
    ).status_code == 303
    assert (await VirtualCluster.get(id=cluster.id)).capacity == 16
    assert "at least 1" in await refused(
        admin, f"/admin/clusters/{cluster.id}", {"capacity": "0"}, f"{fid}-capacity"
    )
    assert (await admin.post(f"/admin/clusters/{cluster.id}/delete")).status_code == 303
    assert not await VirtualCluster.exists()


async def test_data_storages(web: Web) -> None:
    admin = await web.client("admin")
    volume = '{"nfs": {"server": "10.0.0.1", "path": "/export"}}'
    values = {"name": "hw-data", "path": "/nfs/hw-data", "host_path": "/var/tmp/hw", "volume": volume}
    assert (await admin.post("/admin/storages/new", values)).status_code == 303
    storage = await DataStorage.get(name="hw-data")
    assert storage.volume == {"nfs": {"server": "10.0.0.1", "path": "/export"}} and not storage.read_only
    editor = (await (await web.client("alice")).get("/workflows/new?view=form")).text
    assert 'id="nodes-0-storages-hw-data"' in editor
    assert "absolute" in await refused(
        admin, "/admin/storages/new", {"name": "s2", "path": "rel"}, "new-path"
    )
    assert "JSON" in await refused(
        admin, "/admin/storages/new", {"name": "s2", "path": "/x", "volume": "{"}, "new-volume"
    )
    fid = f"s{storage.id}"
    done = await admin.post(f"/admin/storages/{storage.id}", {**values, "read_only": "on"})
    assert done.status_code == 303 and (await DataStorage.get(id=storage.id)).read_only
    host = await refused(
        admin, f"/admin/storages/{storage.id}", {"path": "/x", "host_path": "rel"}, f"{fid}-host_path"
    )
    assert "absolute" in host
    assert (await admin.post(f"/admin/storages/{storage.id}/delete")).status_code == 303
    assert not await DataStorage.exists()


async def test_a_cluster_change_on_the_admin_pages_reaches_the_engine_at_once(web: Web) -> None:
    """Hazard: only the GraphQL adapter reloaded the engine's pools after a cluster change; the same change on
    the admin pages applied only from the next run on (the reload now happens in the service)."""
    admin = await web.client("admin")
    values = {"name": "tiny", "cpu": "1", "memory_mib": "1024", "capacity": "2"}
    assert (await admin.post("/admin/clusters/new", values)).status_code == 303
    pools = web.rt.engine.capacity.pools
    assert pools["tiny"].capacity == 2
    cluster = await VirtualCluster.get(name="tiny")
    assert (await admin.post(f"/admin/clusters/{cluster.id}", {**values, "capacity": "5"})).status_code == 303
    assert pools["tiny"].capacity == 5
    assert (await admin.post(f"/admin/clusters/{cluster.id}/delete")).status_code == 303
    assert "tiny" not in pools
