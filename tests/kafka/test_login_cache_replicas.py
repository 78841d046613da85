"""Cached logins across API replicas (issue 18, point 3): a replica keeps a token it looked up, and a logout, a
revoked token or a deactivated user on *another* replica reaches it through the bus (a control message) long
before the cache's TTL — checked with two ``aihub serve --role api`` processes on PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx

from aihub.services.tokens import TokenCache
from aihub.settings import Settings
from tests.conftest import NewDatabaseUrl
from tests.graphql.harness import LOGIN
from tests.graphql.test_server import free_port, gql, serve

PASSWORD = "admin-password-1"
ME = "{ me { username } }"
#: how long a control message may take between the replicas; far below the cache's TTL
DEADLINE = 15.0
assert TokenCache.TTL > 3 * DEADLINE


async def _status(url: str, token: str) -> str:
    """The answer to ``me`` with ``token``: the username, or the error code."""
    async with httpx.AsyncClient(timeout=30) as http:
        body = (
            await http.post(
                url + "/graphql", json={"query": ME}, headers={"Authorization": f"Bearer {token}"}
            )
        ).json()
    if body.get("errors"):
        return body["errors"][0]["extensions"]["code"]
    return body["data"]["me"]["username"]


async def _until_refused(url: str, token: str) -> str:
    deadline = time.monotonic() + DEADLINE
    while True:
        status = await _status(url, token)
        if status == "UNAUTHENTICATED" or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.1)


async def test_a_logout_on_one_replica_reaches_the_others_cache(
    host_dir, new_database_url: NewDatabaseUrl, tansu: str, prefix: str
) -> None:
    settings = Settings(data_dir=host_dir / "data", database_url=await new_database_url("postgres"))
    env = {
        "AIHUB_BUS": "kafka",
        "AIHUB_KAFKA_BOOTSTRAP": tansu,
        "AIHUB_KAFKA_TOPIC_PREFIX": prefix,
        "AIHUB_ROLE": "api",
        "AIHUB_ADMIN_PASSWORD": PASSWORD,
    }
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(serve(settings, free_port(), **env))
        second = await stack.enter_async_context(serve(settings, free_port(), **env))
        admin = (await gql(first.url, LOGIN, {"u": "admin", "p": PASSWORD}))["login"]["token"]
        created = await gql(
            first.url,
            'mutation { createUser(input: {username: "bob", password: "bob-password-1"}) { id } }',
            None,
            admin,
        )
        bob_id = created["createUser"]["id"]
        bob = (await gql(first.url, LOGIN, {"u": "bob", "p": "bob-password-1"}))["login"]["token"]
        bob_again = (await gql(first.url, LOGIN, {"u": "bob", "p": "bob-password-1"}))["login"]["token"]
        for token in (admin, bob, bob_again):  # looked up, and now cached, on the second replica
            assert await _status(second.url, token) in ("admin", "bob")

        # a logout through the first replica: the second refuses the token too, without waiting for the TTL
        await gql(first.url, "mutation { logout }", None, bob)
        assert await _until_refused(second.url, bob) == "UNAUTHENTICATED"
        assert await _status(second.url, bob_again) == "bob"  # only that token

        # a user deactivated through the first replica: every token of theirs refused on the second
        await gql(first.url, "mutation($id: ID!) { updateUser(id: $id, input: {isActive: false}) { id } }",
                  {"id": bob_id}, admin)  # fmt: skip
        assert await _until_refused(second.url, bob_again) == "UNAUTHENTICATED"
        assert await _status(second.url, admin) == "admin"
