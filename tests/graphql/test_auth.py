"""Authentication through the real HTTP and websocket interfaces: login, bearer tokens, personal tokens,
logout, password changes, and ``connection_init`` on websockets."""

from __future__ import annotations

import json

import pytest
import websockets

from tests.graphql.harness import ADMIN_PASSWORD, LOGIN, PASSWORD, SUBPROTOCOL, GraphQLErrors, Server

ME = "{ me { username isAdmin isTeamLeader team { name } } }"


async def test_admin_created_on_first_start_logs_in(server: Server) -> None:
    data = await server.gql(LOGIN, {"u": "admin", "p": ADMIN_PASSWORD})
    token = data["login"]["token"]
    assert (await server.gql(ME, token=token))["me"] == {
        "username": "admin",
        "isAdmin": True,
        "isTeamLeader": False,
        "team": None,
    }


@pytest.mark.parametrize(("username", "password"), [("alice", "wrong-password"), ("nobody", PASSWORD)])
async def test_bad_credentials_get_one_answer(users: Server, username: str, password: str) -> None:
    error = await users.error(LOGIN, {"u": username, "p": password})
    assert error["message"] == "wrong username or password"
    assert error["extensions"] == {"code": "UNAUTHENTICATED", "field": "password"}


async def test_inactive_user_cannot_log_in_and_tokens_stop(users: Server) -> None:
    alice_token = users.tokens["alice"]
    await users.gql(
        "mutation($id: ID!) { updateUser(id: $id, input: {isActive: false}) { isActive } }",
        {"id": users.users["alice"].id},
        as_="admin",
    )
    error = await users.error(LOGIN, {"u": "alice", "p": PASSWORD})
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    error = await users.error("{ runs { items { id } } }", token=alice_token)
    assert error["extensions"]["code"] == "UNAUTHENTICATED"


async def test_anonymous_and_invalid_tokens(users: Server) -> None:
    assert (await users.gql(ME))["me"] is None
    error = await users.error("{ runs { items { id } } }")
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert "Authorization: Bearer" in error["message"]
    error = await users.error(ME, token="aih_s_not-a-token")
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert "invalid" in error["message"]
    # another scheme is not a bearer token
    response = await users.http.post(
        "/graphql", json={"query": ME}, headers={"Authorization": f"Basic {users.tokens['alice']}"}
    )
    assert response.json()["data"]["me"] is None
    # the scheme is case-insensitive
    response = await users.http.post(
        "/graphql", json={"query": ME}, headers={"Authorization": f"bearer {users.tokens['alice']}"}
    )
    assert response.json()["data"]["me"]["username"] == "alice"


async def test_logout_revokes_the_session_token(users: Server) -> None:
    assert (await users.gql("mutation { logout }", as_="alice"))["logout"] is True
    error = await users.error(ME, as_="alice")
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    error = await users.error("mutation { logout }")
    assert error["extensions"]["code"] == "UNAUTHENTICATED"


CREATE_TOKEN = (
    "mutation($name: String!, $days: Int) { createPersonalToken(name: $name, expiresInDays: $days) "
    "{ token info { id name expiresAt revokedAt } } }"
)
TOKENS = "{ personalTokens { id name revokedAt } }"
REVOKE = "mutation($id: ID!) { revokePersonalToken(id: $id) { id revokedAt } }"


async def test_personal_tokens_create_use_list_revoke(users: Server) -> None:
    created = (await users.gql(CREATE_TOKEN, {"name": "ci", "days": 30}, as_="alice"))["createPersonalToken"]
    token, info = created["token"], created["info"]
    assert token.startswith("aih_p_") and info["name"] == "ci" and info["expiresAt"] is not None
    assert (await users.gql(ME, token=token))["me"]["username"] == "alice"
    listed = (await users.gql(TOKENS, as_="alice"))["personalTokens"]
    assert listed == [{"id": info["id"], "name": "ci", "revokedAt": None}]
    assert token not in str(listed)
    # somebody else's token is not theirs to revoke, and looks missing
    error = await users.error(REVOKE, {"id": info["id"]}, as_="carol")
    assert error["extensions"] == {"code": "NOT_FOUND", "field": "id"}
    revoked = (await users.gql(REVOKE, {"id": info["id"]}, as_="alice"))["revokePersonalToken"]
    assert revoked["revokedAt"] is not None
    error = await users.error(ME, token=token)
    assert error["extensions"]["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    ("variables", "field"),
    [({"name": " "}, "name"), ({"name": "x" * 101}, "name"), ({"name": "ok", "days": 0}, "expiresInDays")],
)
async def test_personal_token_input_errors(users: Server, variables: dict, field: str) -> None:
    error = await users.error(CREATE_TOKEN, variables, as_="alice")
    assert error["extensions"] == {"code": "INVALID_INPUT", "field": field}


CHANGE = "mutation($o: String!, $n: String!) { changePassword(oldPassword: $o, newPassword: $n) }"


async def test_change_password(users: Server) -> None:
    error = await users.error(CHANGE, {"o": "wrong", "n": "new-password-1"}, as_="alice")
    assert error["extensions"] == {"code": "INVALID_INPUT", "field": "oldPassword"}
    error = await users.error(CHANGE, {"o": PASSWORD, "n": "short"}, as_="alice")
    assert error["extensions"] == {"code": "INVALID_INPUT", "field": "newPassword"}
    assert (await users.gql(CHANGE, {"o": PASSWORD, "n": "new-password-1"}, as_="alice"))["changePassword"]
    await users.gql(LOGIN, {"u": "alice", "p": "new-password-1"})
    with pytest.raises(GraphQLErrors):
        await users.gql(LOGIN, {"u": "alice", "p": PASSWORD})


async def _closed_with(server: Server, payload: dict) -> int:
    async with websockets.connect(server.ws_url, subprotocols=[SUBPROTOCOL]) as conn:
        await conn.send(json.dumps({"type": "connection_init", "payload": payload}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await conn.recv()
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code


@pytest.mark.parametrize(
    "payload", [{}, {"token": "aih_s_bogus"}, {"Authorization": "Bearer aih_s_bogus"}, {"Authorization": 3}]
)
async def test_websocket_without_valid_token_is_closed_4403(users: Server, payload: dict) -> None:
    assert await _closed_with(users, payload) == 4403


async def test_websocket_accepts_both_token_forms(users: Server) -> None:
    query = "subscription($id: ID!) { runEvents(runId: $id) { runStatus } }"
    for payload in ({"token": users.tokens["alice"]}, {"Authorization": f"Bearer {users.tokens['alice']}"}):
        async with users.ws(payload=payload) as ws:
            op = await ws.subscribe(query, {"id": "999999"})
            with pytest.raises(GraphQLErrors) as errors:
                async for _ in ws.results(op):
                    pass
            assert errors.value.codes == ["NOT_FOUND"]


async def test_legacy_graphql_ws_protocol_is_off(users: Server) -> None:
    async with websockets.connect(users.ws_url, subprotocols=["graphql-ws"]) as conn:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await conn.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4406
