"""Issue 11, point 8: forwarded addresses count only from configured proxies (a local process, a node
included, cannot pose as other addresses), and a user disabled then enabled again gets none of their old
tokens back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aihub.db.models import TokenKind
from aihub.domain.status import NodeStatus
from aihub.services.ratelimit import MAX_FAILURES_PER_CLIENT, login_limiter
from aihub.services.runs import create_run, stop_run
from aihub.services.tokens import issue_token
from aihub.services.workflows import create_workflow
from aihub.settings import Settings
from tests.engine.support import wait_for_node, wait_for_run
from tests.graphql.harness import LOGIN, Server

pytestmark = pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)

UPDATE_USER = "mutation($id: ID!, $i: UpdateUserInput!) { updateUser(id: $id, input: $i) { isActive } }"


@pytest.fixture(autouse=True)
def _fresh_limiter() -> Iterator[None]:
    login_limiter.reset()
    yield
    login_limiter.reset()


async def _fail(server: Server, attempt: int, forwarded: str) -> str:
    response = await server.http.post(
        "/graphql",
        json={"query": LOGIN, "variables": {"u": f"nobody{attempt}", "p": "wrong"}},
        headers={"X-Forwarded-For": forwarded},
    )
    return response.json()["errors"][0]["extensions"]["code"]  # type: ignore[no-any-return]


async def test_forwarded_for_from_anyone_is_ignored(server: Server) -> None:
    """The hazard: 60 rotating X-Forwarded-For values were never limited; a node on 127.0.0.1 could spray
    passwords."""
    codes = [await _fail(server, i, f"203.0.113.{i}") for i in range(MAX_FAILURES_PER_CLIENT + 1)]
    assert codes[:-1] == ["UNAUTHENTICATED"] * MAX_FAILURES_PER_CLIENT
    assert codes[-1] == "RATE_LIMITED"  # all counted for 127.0.0.1, the real peer


class TestBehindAProxy:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        settings.trusted_proxies = "127.0.0.1"
        return settings

    async def test_a_configured_proxy_is_believed(self, server: Server) -> None:
        codes = [await _fail(server, i, f"203.0.113.{i}") for i in range(MAX_FAILURES_PER_CLIENT + 1)]
        assert set(codes) == {"UNAUTHENTICATED"}  # one failure for each forwarded address
        codes = [await _fail(server, i, "198.51.100.7") for i in range(MAX_FAILURES_PER_CLIENT + 1)]
        assert codes[-1] == "RATE_LIMITED"


async def test_reenabling_a_user_does_not_revive_old_tokens(users: Server) -> None:
    """The hazard: disabling a user only hid their tokens; enabling them again brought back every session,
    personal token and run token they had, stolen ones included."""
    alice = users.users["alice"]
    personal = (await users.gql('mutation { createPersonalToken(name: "ci") { token } }', as_="alice"))[
        "createPersonalToken"
    ]["token"]
    version = await create_workflow(
        alice, {"name": "sleeper", "nodes": [{"name": "s", "command": "sleep 1000"}]}
    )
    run = await create_run(users.rt.bus, alice, version.id)
    await wait_for_node(users.rt, run.id, "s", NodeStatus.RUNNING)
    run_token, _ = await issue_token(alice.id, TokenKind.RUN, run_id=run.id)
    old = {"session": users.tokens["alice"], "personal": personal, "run": run_token}
    for token in old.values():
        assert (await users.gql("{ me { username } }", token=token))["me"]["username"] == "alice"
    try:
        await users.gql(UPDATE_USER, {"id": str(alice.id), "i": {"isActive": False}}, as_="admin")
        await users.gql(UPDATE_USER, {"id": str(alice.id), "i": {"isActive": True}}, as_="admin")
        for kind, token in old.items():
            error = await users.error("{ me { username } }", token=token)
            assert error["extensions"]["code"] == "UNAUTHENTICATED", kind
        fresh = await users.gql(LOGIN, {"u": "alice", "p": "password-1234"})  # she can log in again
        assert fresh["login"]["token"] not in old.values()
        # an admin's own tokens are untouched
        assert (await users.gql("{ me { username } }", as_="admin"))["me"]["username"] == "admin"
    finally:
        await stop_run(users.rt.bus, users.users["admin"], run.id)
        await wait_for_run(users.rt, run.id)
