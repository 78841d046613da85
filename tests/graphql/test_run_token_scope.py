"""A run token (``AI_HUB_TOKEN``) is held by node code, possibly someone else's: it may call only a short
allow-list, for its own run, and only while that run is active (issue 11, point 2)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aihub.db.models import ApiToken, Run, TokenKind
from aihub.domain.status import NodeStatus
from aihub.services.runs import create_run, stop_run
from aihub.services.tokens import issue_token
from aihub.services.workflows import create_workflow
from tests.engine.support import wait_for_node, wait_for_run
from tests.graphql.harness import Server

pytestmark = pytest.mark.usefixtures("users")

SLEEPER = {"name": "sleeper", "nodes": [{"name": "s", "command": "sleep 1000"}]}


@pytest.fixture
async def run_token(users: Server) -> AsyncIterator[tuple[str, Run]]:
    """A run token of alice's active run (what her node sees as ``AI_HUB_TOKEN``)."""
    alice = users.users["alice"]
    version = await create_workflow(alice, SLEEPER)
    run = await create_run(users.rt.bus, alice, version.id)
    await wait_for_node(users.rt, run.id, "s", NodeStatus.RUNNING)
    token, _ = await issue_token(alice.id, TokenKind.RUN, run_id=run.id)
    yield token, run
    if not (await Run.get(id=run.id)).status.is_terminal:
        await stop_run(users.rt.bus, alice, run.id)
    await wait_for_run(users.rt, run.id)


FORBIDDEN_OPERATIONS = [
    'mutation { createPersonalToken(name: "forever", expiresInDays: 365) { token } }',
    'mutation { changePassword(oldPassword: "password-1234", newPassword: "owned-by-node-1") }',
    "mutation { logout }",
    "mutation($w: ID!) { setWorkflowShared(workflowId: $w, shared: true) { id } }",
    "mutation($v: ID!) { createRun(versionId: $v) { id } }",
    "mutation($r: ID!) { stopRun(id: $r) { id } }",
    'mutation { createTeam(name: "mine") { id } }',
    "mutation { reviewModule(reviewId: 1, approve: true) { id } }",
    "{ personalTokens { id } }",
    "{ users { id } }",
    "{ workflows { items { id } } }",
    # hidden behind an alias, an inline fragment and a named fragment
    'mutation { harmless: createPersonalToken(name: "x") { token } }',
    'mutation { ... on Mutation { createPersonalToken(name: "x") { token } } }',
    'mutation { ...T } fragment T on Mutation { createPersonalToken(name: "x") { token } }',
    "{ me { username } ...U } fragment U on Query { users { id } }",
]


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
async def test_run_token_cannot_mint_tokens_or_change_anything(
    users: Server, run_token: tuple[str, Run]
) -> None:
    """The hazard: a node's token minted a year-long personal token that outlived the run."""
    token, run = run_token
    await run.fetch_related("version")
    variables = {"w": str(run.version.workflow_id), "v": str(run.version_id), "r": str(run.id)}  # type: ignore[attr-defined]
    for query in FORBIDDEN_OPERATIONS:
        used = {k: v for k, v in variables.items() if f"${k}" in query}
        error = await users.error(query, used, token=token)
        assert error["extensions"]["code"] == "FORBIDDEN", (query, error)
        assert "run token" in error["message"]
    assert not await ApiToken.filter(kind=TokenKind.PERSONAL).exists()
    assert await Run.filter(owner_id=users.users["alice"].id).count() == 1
    # the password did not change: alice still logs in with hers
    await users.gql('mutation { login(username: "alice", password: "password-1234") { token } }')


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
async def test_run_token_reads_only_its_own_run(users: Server, run_token: tuple[str, Run]) -> None:
    token, run = run_token
    data = await users.gql(
        "query($id: ID!) { me { username } run(id: $id) { status } categories { name } }",
        {"id": str(run.id)},
        token=token,
    )
    assert data["me"]["username"] == "alice" and data["run"]["status"] == "RUNNING"
    other = await create_run(users.rt.bus, users.users["alice"], run.version_id)  # type: ignore[attr-defined]
    try:
        error = await users.error(
            "query($id: ID!) { run(id: $id) { status } }", {"id": str(other.id)}, token=token
        )
        assert error["extensions"] == {"code": "FORBIDDEN", "field": "id"}
        async with users.ws(token) as ws:
            op = await ws.subscribe(
                "subscription($id: ID!) { runEvents(runId: $id) { runStatus } }", {"id": str(other.id)}
            )
            message = await ws.recv()
            assert message["id"] == op and message["type"] in ("error", "next"), message
            errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
            assert errors[0]["extensions"]["code"] == "FORBIDDEN"
        download = await users.http.get(
            f"/api/runs/{other.id}/nodes/s/outputs/x", headers={"Authorization": f"Bearer {token}"}
        )
        assert download.status_code == 403
    finally:
        await stop_run(users.rt.bus, users.users["alice"], other.id)
        await wait_for_run(users.rt, other.id)


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
async def test_run_token_does_not_open_web_pages(users: Server, run_token: tuple[str, Run]) -> None:
    """The hazard: the token in a session cookie opened every page (tokens and passwords are pages too)."""
    token, _ = run_token
    page = await users.http.get("/runs", headers={"Cookie": f"aihub_session={token}"})
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    session = await users.http.get("/runs", headers={"Cookie": f"aihub_session={users.tokens['alice']}"})
    assert session.status_code != 303  # a session token is let in


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
async def test_run_token_is_checked_on_every_use(users: Server, run_token: tuple[str, Run]) -> None:
    """A run that ended without its tokens being revoked (a crash between the two) still ends its token."""
    token, run = run_token
    assert (await users.gql("{ me { username } }", token=token))["me"]["username"] == "alice"
    await stop_run(users.rt.bus, users.users["alice"], run.id)
    await wait_for_run(users.rt, run.id)
    await ApiToken.filter(run_id=run.id).update(revoked_at=None)
    error = await users.error("{ me { username } }", token=token)
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
