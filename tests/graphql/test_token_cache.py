"""The login cache (issue 18, point 3): a token is looked up once, and every change that can make a cached
row wrong is seen by the very next request. Across replicas: tests/kafka/test_login_cache_replicas.py."""

from __future__ import annotations

import time

import pytest

from aihub.db.models import ApiToken, TokenKind, User
from aihub.services.tokens import TokenCache
from tests.graphql.harness import Server
from tests.graphql.test_limits import QueryCounter, sql  # noqa: F401  (fixture)

ME = "{ me { username isAdmin } }"


async def test_a_token_is_looked_up_once(users: Server, sql: QueryCounter) -> None:  # noqa: F811
    await users.gql(ME, {}, as_="alice")
    before = len(sql)
    assert (await users.gql(ME, {}, as_="alice"))["me"]["username"] == "alice"
    assert not [q for q in sql.queries[before:] if "api_token" in q]


async def test_a_saved_user_is_seen_by_the_next_request(users: Server) -> None:
    assert (await users.gql(ME, {}, as_="alice"))["me"]["isAdmin"] is False  # cached now
    alice = await User.get(username="alice")
    alice.is_admin = True
    await alice.save(update_fields=["is_admin"])
    assert (await users.gql(ME, {}, as_="alice"))["me"]["isAdmin"] is True


async def test_a_logout_is_seen_by_the_next_request(users: Server) -> None:
    await users.gql(ME, {}, as_="alice")
    assert (await users.gql("mutation { logout }", {}, as_="alice"))["logout"] is True
    error = await users.error(ME, {}, as_="alice")
    assert error["extensions"]["code"] == "UNAUTHENTICATED"


# ------------------------------------------------------------------------------ the cache without a database
def _row(kind: TokenKind = TokenKind.SESSION, user_id: int = 1) -> ApiToken:
    return ApiToken(id=1, user_id=user_id, kind=kind, token_hash="h", name="")


def test_a_lookup_that_raced_with_an_invalidation_is_not_stored() -> None:
    cache = TokenCache()
    generation = cache.generation  # the lookup starts
    cache.forget(user_id=1)  # a change lands while it waits for the database
    cache.put("h", _row(), generation)
    assert cache.get("h") is None
    cache.put("h", _row(), cache.generation)
    assert cache.get("h") is not None


def test_run_tokens_are_never_cached() -> None:
    cache = TokenCache()
    cache.put("h", _row(TokenKind.RUN), cache.generation)
    assert len(cache) == 0


@pytest.mark.parametrize(
    ("forget", "kept"), [({"user_id": 1}, {"b"}), ({"token_hash": "a"}, {"b", "c"}), ({}, set())]
)
def test_forget_drops_what_it_names(forget: dict[str, object], kept: set[str]) -> None:
    cache = TokenCache()
    for key, user in (("a", 1), ("b", 2), ("c", 1)):
        cache.put(key, _row(user_id=user), cache.generation)
    cache.forget(**forget)  # type: ignore[arg-type]
    assert {k for k in "abc" if cache.get(k) is not None} == kept


def test_an_entry_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = TokenCache()
    cache.put("h", _row(), cache.generation)
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + TokenCache.TTL + 1)
    assert cache.get("h") is None
