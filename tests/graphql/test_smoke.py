from __future__ import annotations

from tests.graphql.conftest import Server


async def test_health_and_me(users: Server) -> None:
    response = await users.http.get("/healthz")
    assert response.json()["status"] == "ok"
    data = await users.gql("{ me { username isAdmin team { name } } }", as_="alice")
    assert data["me"] == {"username": "alice", "isAdmin": False, "team": {"name": "ml"}}
