"""Administration through the API: users, teams, virtual clusters, data storages and categories, with each
input error; and what the changes do (a new user logs in, a cluster becomes usable in specs and the engine)."""

from __future__ import annotations

from typing import Any

import pytest

from aihub.db.models import Category, Module
from tests.graphql.harness import LOGIN, Server

pytestmark = pytest.mark.usefixtures("users")

CREATE_USER = (
    "mutation($i: CreateUserInput!) { createUser(input: $i) { id username displayName isAdmin isTeamLeader"
    " team { name } } }"
)
UPDATE_USER = "mutation($id: ID!, $i: UpdateUserInput!) { updateUser(id: $id, input: $i) { username isActive isAdmin isTeamLeader team { name } } }"
CREATE_TEAM = (
    "mutation($n: String!, $p: Boolean!) { createTeam(name: $n, peerReview: $p) { id name peerReview } }"
)
CLUSTER = "mutation($i: VirtualClusterInput!) { createVirtualCluster(input: $i) { id name gpu cpuMillis memoryMib capacity nodeSelector } }"
UPDATE_CLUSTER = "mutation($id: ID!, $i: VirtualClusterInput!) { updateVirtualCluster(id: $id, input: $i) { name capacity } }"
STORAGE = (
    "mutation($i: DataStorageInput!) { createDataStorage(input: $i) { id name path hostPath readOnly } }"
)
CATEGORY = (
    "mutation($n: String!, $d: String) { createCategory(name: $n, description: $d) { id name description } }"
)


def ext(error: dict[str, Any]) -> dict[str, Any]:
    return error["extensions"]  # type: ignore[no-any-return]


async def test_users_and_teams(users: Server) -> None:
    team = (await users.gql(CREATE_TEAM, {"n": "vision", "p": True}, as_="admin"))["createTeam"]
    assert team["name"] == "vision" and team["peerReview"] is True
    assert ext(await users.error(CREATE_TEAM, {"n": "vision", "p": False}, as_="admin")) == {
        "code": "CONFLICT",
        "field": "name",
    }
    assert ext(await users.error(CREATE_TEAM, {"n": "Bad Name", "p": False}, as_="admin")) == {
        "code": "INVALID_INPUT",
        "field": "name",
    }
    created = (
        await users.gql(
            CREATE_USER,
            {
                "i": {
                    "username": "erin",
                    "password": "erin-password",
                    "displayName": "Erin",
                    "teamId": team["id"],
                    "isTeamLeader": True,
                }
            },
            as_="admin",
        )
    )["createUser"]
    assert (
        created["team"] == {"name": "vision"} and created["isTeamLeader"] and created["displayName"] == "Erin"
    )
    token = (await users.gql(LOGIN, {"u": "erin", "p": "erin-password"}))["login"]["token"]
    assert (await users.gql("{ me { username } }", token=token))["me"] == {"username": "erin"}
    for variables, code, field in (
        ({"username": "erin", "password": "password-2"}, "CONFLICT", "username"),
        ({"username": "Bad Name", "password": "password-2"}, "INVALID_INPUT", "username"),
        ({"username": "frank", "password": "short"}, "INVALID_INPUT", "password"),
        (
            {"username": "frank", "password": "password-2", "isTeamLeader": True},
            "INVALID_INPUT",
            "isTeamLeader",
        ),
        ({"username": "frank", "password": "password-2", "teamId": "99999"}, "NOT_FOUND", "teamId"),
    ):
        error = await users.error(CREATE_USER, {"i": variables}, as_="admin")
        assert ext(error)["code"] == code and ext(error)["field"] == field, (variables, error)
    # updates: make admin, change team, deactivate; the admin cannot lock themselves out
    updated = (
        await users.gql(
            UPDATE_USER, {"id": created["id"], "i": {"isAdmin": True, "clearTeam": True}}, as_="admin"
        )
    )["updateUser"]
    assert updated == {
        "username": "erin",
        "isActive": True,
        "isAdmin": True,
        "isTeamLeader": False,
        "team": None,
    }
    await users.gql(UPDATE_USER, {"id": created["id"], "i": {"password": "erin-new-password"}}, as_="admin")
    await users.gql(LOGIN, {"u": "erin", "p": "erin-new-password"})
    error = await users.error(
        UPDATE_USER, {"id": users.users["admin"].id, "i": {"isAdmin": False}}, as_="admin"
    )
    assert ext(error) == {"code": "INVALID_INPUT", "field": "id"}
    assert ext(await users.error(UPDATE_USER, {"id": "99999", "i": {}}, as_="admin"))["code"] == "NOT_FOUND"
    error = await users.error(UPDATE_USER, {"id": created["id"], "i": {"isTeamLeader": True}}, as_="admin")
    assert ext(error) == {"code": "INVALID_INPUT", "field": "isTeamLeader"}
    # teams: rename, delete (members stay, without a team)
    renamed = await users.gql(
        'mutation($id: ID!) { updateTeam(id: $id, name: "vision-2") { name } }',
        {"id": team["id"]},
        as_="admin",
    )
    assert renamed["updateTeam"] == {"name": "vision-2"}
    ml = next(
        t for t in (await users.gql("{ teams { id name } }", as_="alice"))["teams"] if t["name"] == "ml"
    )
    assert (await users.gql("mutation($id: ID!) { deleteTeam(id: $id) }", {"id": ml["id"]}, as_="admin"))[
        "deleteTeam"
    ]
    bob = (await users.gql("{ me { team { name } isTeamLeader } }", as_="bob"))["me"]
    assert bob == {"team": None, "isTeamLeader": False}


async def test_virtual_clusters_reach_specs_and_the_engine(users: Server) -> None:
    spec = {"name": "gpu-job", "nodes": [{"name": "a", "command": "true", "cluster": "rtx2080x8"}]}
    create_wf = "mutation($s: JSON!) { createWorkflow(spec: $s) { id } }"
    assert ext(await users.error(create_wf, {"s": spec}, as_="alice"))["field"] == "spec"
    cluster = (
        await users.gql(
            CLUSTER,
            {
                "i": {
                    "name": "rtx2080x8",
                    "gpu": 1,
                    "cpuMillis": 10000,
                    "memoryMib": 81920,
                    "capacity": 2,
                    "nodeSelector": {"pool": "gpu"},
                }
            },
            as_="admin",
        )
    )["createVirtualCluster"]
    assert cluster["gpu"] == 1 and cluster["nodeSelector"] == {"pool": "gpu"}
    assert "rtx2080x8" in users.rt.engine.capacity.pools
    await users.gql(create_wf, {"s": spec}, as_="alice")
    listed = (await users.gql("{ virtualClusters { name capacity } }", as_="carol"))["virtualClusters"]
    assert listed == [{"name": "rtx2080x8", "capacity": 2}]
    updated = await users.gql(
        UPDATE_CLUSTER, {"id": cluster["id"], "i": {"capacity": 4, "name": "ignored"}}, as_="admin"
    )
    assert updated["updateVirtualCluster"] == {"name": "rtx2080x8", "capacity": 4}
    assert users.rt.engine.capacity.pools["rtx2080x8"].capacity == 4
    for variables, field in (
        ({"name": "local"}, "name"),
        ({"name": "rtx2080x8"}, "name"),
        ({"name": "x", "capacity": 0}, "capacity"),
        ({"name": "x", "cpuMillis": 0}, "cpuMillis"),
        ({"name": "x", "gpu": -1}, "gpu"),
        ({"name": "x", "nodeSelector": {"a": 1}}, "nodeSelector"),
    ):
        error = await users.error(CLUSTER, {"i": variables}, as_="admin")
        assert ext(error)["field"] == field, (variables, error)
    assert await users.gql(
        "mutation($id: ID!) { deleteVirtualCluster(id: $id) }", {"id": cluster["id"]}, as_="admin"
    )
    assert "rtx2080x8" not in users.rt.engine.capacity.pools
    error = await users.error("mutation { deleteVirtualCluster(id: 99999) }", as_="admin")
    assert ext(error) == {"code": "NOT_FOUND", "field": "id"}


async def test_data_storages(users: Server) -> None:
    storage = (
        await users.gql(
            STORAGE,
            {"i": {"name": "hw-data", "path": "/mnt/hw", "hostPath": "/srv/hw", "readOnly": True}},
            as_="admin",
        )
    )["createDataStorage"]
    assert storage == {
        "id": storage["id"],
        "name": "hw-data",
        "path": "/mnt/hw",
        "hostPath": "/srv/hw",
        "readOnly": True,
    }
    assert (await users.gql("{ dataStorages { name } }", as_="carol"))["dataStorages"] == [
        {"name": "hw-data"}
    ]
    for variables, field in (
        ({"name": "rel", "path": "mnt/x"}, "path"),
        ({"name": "dots", "path": "/mnt/../etc"}, "path"),
        ({"name": "host", "path": "/mnt/x", "hostPath": "srv"}, "hostPath"),
        ({"name": "hw-data", "path": "/mnt/x"}, "name"),
        ({"path": "/mnt/x"}, "name"),
    ):
        error = await users.error(STORAGE, {"i": variables}, as_="admin")
        assert ext(error)["field"] == field, (variables, error)
    changed = await users.gql(
        "mutation($id: ID!) { updateDataStorage(id: $id, input: {readOnly: false}) { readOnly } }",
        {"id": storage["id"]},
        as_="admin",
    )
    assert changed["updateDataStorage"] == {"readOnly": False}
    assert await users.gql(
        "mutation($id: ID!) { deleteDataStorage(id: $id) }", {"id": storage["id"]}, as_="admin"
    )


async def test_categories(users: Server) -> None:
    category = (await users.gql(CATEGORY, {"n": "vision", "d": "images"}, as_="admin"))["createCategory"]
    assert category["description"] == "images"
    assert ext(await users.error(CATEGORY, {"n": "vision"}, as_="admin")) == {
        "code": "CONFLICT",
        "field": "name",
    }
    assert ext(await users.error(CATEGORY, {"n": "-bad"}, as_="admin")) == {
        "code": "INVALID_INPUT",
        "field": "name",
    }
    renamed = await users.gql(
        'mutation($id: ID!) { updateCategory(id: $id, name: "cv") { name description } }',
        {"id": category["id"]},
        as_="admin",
    )
    assert renamed["updateCategory"] == {"name": "cv", "description": "images"}
    assert (await users.gql("{ categories { name } }", as_="carol"))["categories"] == [{"name": "cv"}]
    await Module.create(
        name="m",
        category=await Category.get(id=category["id"]),
        owner=users.users["alice"],
        git_url="file:///x",
    )
    error = await users.error(
        "mutation($id: ID!) { deleteCategory(id: $id) }", {"id": category["id"]}, as_="admin"
    )
    assert ext(error) == {"code": "CONFLICT", "field": "id"}
