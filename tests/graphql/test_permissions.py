"""The permission matrix (admin / owner / team member / other user) for reads and actions.

The engine is off here: runs stay where the API puts them, so every check is about permissions alone.
``alice`` owns a private workflow and a team-shared one (team ``ml`` with ``bob``); ``carol`` is in another team.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.graphql.harness import Server

pytestmark = pytest.mark.usefixtures("users")

CREATE_WF = "mutation($spec: JSON!) { createWorkflow(spec: $spec) { id workflow { id } } }"
SHARE = "mutation($id: ID!) { setWorkflowShared(workflowId: $id, shared: true) { sharedWithTeam } }"
CREATE_RUN = "mutation($v: ID!) { createRun(versionId: $v) { id status } }"
RUN = "query($id: ID!) { run(id: $id) { id name status owner { username } nodes { name status } } }"
WORKFLOW = "query($id: ID!) { workflow(id: $id) { id name owner { username } } }"
VERSION = "query($id: ID!) { workflowVersion(id: $id) { id number spec } }"
STOP = "mutation($id: ID!) { stopRun(id: $id) { status } }"
RETRY = "mutation($id: ID!) { retryRun(id: $id) { status retryCount } }"
COPY = "mutation($id: ID!) { copyRun(id: $id) { id owner { username } } }"
NEW_VERSION = (
    "mutation($w: ID!, $spec: JSON!) { createWorkflowVersion(workflowId: $w, spec: $spec) { number } }"
)

USERS = ["admin", "alice", "bob", "carol"]


def spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "nodes": [{"name": "a", "command": "true"}, {"name": "b", "depends_on": ["a"], "command": "true"}],
    }


@pytest.fixture
def app_options() -> dict[str, Any]:
    return {"run_engine": False}


@pytest.fixture
async def world(users: Server) -> dict[str, str]:
    """alice's private workflow/version/run and shared workflow/version/run ids."""
    ids: dict[str, str] = {}
    for kind in ("private", "shared"):
        version = (await users.gql(CREATE_WF, {"spec": spec(kind)}, as_="alice"))["createWorkflow"]
        ids[f"{kind}_wf"], ids[f"{kind}_version"] = version["workflow"]["id"], version["id"]
        if kind == "shared":
            await users.gql(SHARE, {"id": version["workflow"]["id"]}, as_="alice")
        ids[f"{kind}_run"] = (await users.gql(CREATE_RUN, {"v": version["id"]}, as_="alice"))["createRun"][
            "id"
        ]
    return ids


# who sees what: admin everything, the owner their own, the team what is shared, others nothing
SEES = {
    "private": {"admin": True, "alice": True, "bob": False, "carol": False},
    "shared": {"admin": True, "alice": True, "bob": True, "carol": False},
}


CASES = [(kind, who) for kind in ("private", "shared") for who in USERS]


async def test_reads(users: Server, world: dict[str, str]) -> None:
    for kind, who in CASES:
        await _check_reads(users, world, kind, who)


async def _check_reads(users: Server, world: dict[str, str], kind: str, who: str) -> None:
    visible = SEES[kind][who]
    run = (await users.gql(RUN, {"id": world[f"{kind}_run"]}, as_=who))["run"]
    workflow = (await users.gql(WORKFLOW, {"id": world[f"{kind}_wf"]}, as_=who))["workflow"]
    version = (await users.gql(VERSION, {"id": world[f"{kind}_version"]}, as_=who))["workflowVersion"]
    seen = (run is not None, workflow is not None, version is not None)
    assert seen == (visible, visible, visible), (kind, who)
    if visible:
        assert run["owner"]["username"] == "alice" and [n["name"] for n in run["nodes"]] == ["a", "b"]
    listed = (await users.gql("{ runs { items { id } } }", as_=who))["runs"]["items"]
    assert ({"id": world[f"{kind}_run"]} in listed) == visible
    listed_wf = (await users.gql("{ workflows { items { id } } }", as_=who))["workflows"]["items"]
    assert ({"id": world[f"{kind}_wf"]} in listed_wf) == visible


async def test_an_unauthorised_read_looks_exactly_like_a_missing_object(
    users: Server, world: dict[str, str]
) -> None:
    for who in ("bob", "carol"):
        await _check_hidden_like_missing(users, world, who)


async def _check_hidden_like_missing(users: Server, world: dict[str, str], who: str) -> None:
    hidden = await users.post(RUN, {"id": world["private_run"]}, as_=who)
    missing = await users.post(RUN, {"id": "987654"}, as_=who)
    assert hidden == missing == {"data": {"run": None}}
    hidden = await users.post(STOP, {"id": world["private_run"]}, as_=who)
    missing = await users.post(STOP, {"id": "987654"}, as_=who)
    assert hidden["errors"][0]["message"].replace(world["private_run"], "N") == missing["errors"][0][
        "message"
    ].replace("987654", "N")
    assert (
        hidden["errors"][0]["extensions"]
        == missing["errors"][0]["extensions"]
        == {
            "code": "NOT_FOUND",
            "field": "id",
        }
    )


# acting: the owner and admins; team members may look (and copy) but not stop or retry
ACTS = {"admin": True, "alice": True, "bob": False, "carol": False}


async def test_stop_and_retry(users: Server, world: dict[str, str]) -> None:
    for kind, who in CASES:
        await _check_stop_and_retry(users, world, kind, who)


async def _check_stop_and_retry(users: Server, world: dict[str, str], kind: str, who: str) -> None:
    run_id = world[f"{kind}_run"]
    body = await users.post(STOP, {"id": run_id}, as_=who)
    if not ACTS[who]:
        assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        await users.gql(STOP, {"id": run_id}, as_="alice")
    else:
        assert body["data"]["stopRun"]["status"] == "STOPPED"
    body = await users.post(RETRY, {"id": run_id}, as_=who)
    if ACTS[who]:
        assert body["data"]["retryRun"]["status"] == "PENDING", (kind, who)
    else:
        assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND", (kind, who)
        await users.gql(RETRY, {"id": run_id}, as_="alice")


async def test_copy_and_create_run(users: Server, world: dict[str, str]) -> None:
    for kind, who in CASES:
        await _check_copy_and_create_run(users, world, kind, who)


async def _check_copy_and_create_run(users: Server, world: dict[str, str], kind: str, who: str) -> None:
    visible = SEES[kind][who]
    body = await users.post(COPY, {"id": world[f"{kind}_run"]}, as_=who)
    if visible:
        assert body["data"]["copyRun"]["owner"]["username"] == who  # the copy is the caller's run
    else:
        assert body["errors"][0]["extensions"] == {"code": "NOT_FOUND", "field": "id"}
    body = await users.post(CREATE_RUN, {"v": world[f"{kind}_version"]}, as_=who)
    if visible:
        assert body["data"]["createRun"]["status"] == "PENDING"
    else:
        assert body["errors"][0]["extensions"] == {"code": "NOT_FOUND", "field": "versionId"}


async def test_new_versions_only_by_owner_or_admin(users: Server, world: dict[str, str]) -> None:
    for kind, who in CASES:
        body = await users.post(NEW_VERSION, {"w": world[f"{kind}_wf"], "spec": spec(kind)}, as_=who)
        if who in ("admin", "alice"):
            assert body["data"]["createWorkflowVersion"]["number"] >= 2, (kind, who)
        else:
            assert body["errors"][0]["extensions"] == {"code": "NOT_FOUND", "field": "workflowId"}, (
                kind,
                who,
            )


ADMIN_ONLY = [
    'createTeam(name: "t2") { id }',
    'createCategory(name: "vision") { id }',
    'createVirtualCluster(input: {name: "gpu"}) { id }',
    'createDataStorage(input: {name: "nfs", path: "/mnt/nfs"}) { id }',
    'createUser(input: {username: "eve", password: "password-eve"}) { id }',
]


async def test_admin_mutations_are_forbidden_to_others(users: Server) -> None:
    for who in ("alice", "bob"):
        for mutation in ADMIN_ONLY:
            error = await users.error("mutation { " + mutation + " }", as_=who)
            assert error["extensions"]["code"] == "FORBIDDEN", (who, mutation)
            assert error["message"] == "only administrators may do this"


async def test_users_list_admin_sees_all_others_their_team(users: Server) -> None:
    names = {
        who: [u["username"] for u in (await users.gql("{ users { username } }", as_=who))["users"]]
        for who in USERS
    }
    assert names["admin"] == ["admin", "alice", "bob", "carol"]
    assert names["alice"] == names["bob"] == ["alice", "bob"]
    assert names["carol"] == ["carol"]
