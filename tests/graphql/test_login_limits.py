"""Brute-force protection of ``login``: failed attempts per username and per client address in a sliding
window, through the real GraphQL server; and the limiter's own bookkeeping (expiry, bounded memory)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from aihub.services import auth
from aihub.services import users as users_service
from aihub.services.ratelimit import (
    MAX_FAILURES_PER_CLIENT,
    MAX_FAILURES_PER_USERNAME,
    WINDOW_SECONDS,
    LoginLimiter,
    TooManyAttempts,
    login_limiter,
)
from tests.graphql.harness import LOGIN, PASSWORD, Server


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    """The server's limiter on a clock the test moves, with no failures before or after the test (the limiter
    is global to this process, and so is every other test's server)."""
    fake = FakeClock()
    login_limiter.reset()
    monkeypatch.setattr(login_limiter, "clock", fake)
    yield fake
    login_limiter.reset()


async def fail(server: Server, username: str, times: int = 1) -> None:
    for _ in range(times):
        error = await server.error(LOGIN, {"u": username, "p": "wrong-password"})
        assert error["extensions"]["code"] == "UNAUTHENTICATED", error


async def refused(server: Server, username: str, password: str = PASSWORD) -> dict[str, Any]:
    error = await server.error(LOGIN, {"u": username, "p": password})
    assert error["extensions"]["code"] == "RATE_LIMITED", error
    return error


async def test_a_username_is_locked_after_ten_failures(users: Server, clock: FakeClock) -> None:
    await fail(users, "alice")
    clock.now += 60
    # the username is normalised: these count for alice too
    await fail(users, " Alice ", 4)
    await fail(users, "ALICE", MAX_FAILURES_PER_USERNAME - 5)
    error = await refused(users, "alice")  # even with the right password
    assert error["extensions"] == {
        "code": "RATE_LIMITED",
        "field": "username",
        "retryAfter": WINDOW_SECONDS - 60,
    }
    assert error["message"] == (
        f"too many failed logins for this username; try again in {WINDOW_SECONDS - 60} seconds"
    )
    # another user is not affected
    await users.gql(LOGIN, {"u": "bob", "p": PASSWORD})
    # once the first failure has left the window, nine remain: the right password works again
    clock.now += WINDOW_SECONDS - 60 - 1
    await refused(users, "alice")
    clock.now += 2
    data = await users.gql(LOGIN, {"u": "alice", "p": PASSWORD})
    assert data["login"]["token"]


async def test_a_success_clears_the_username_failures(users: Server) -> None:
    await fail(users, "alice", MAX_FAILURES_PER_USERNAME - 1)
    await users.gql(LOGIN, {"u": "alice", "p": PASSWORD})
    await fail(users, "alice", MAX_FAILURES_PER_USERNAME - 1)
    await users.gql(LOGIN, {"u": "alice", "p": PASSWORD})
    await fail(users, "alice", MAX_FAILURES_PER_USERNAME)
    await refused(users, "alice")


async def test_an_address_is_locked_after_fifty_failures_across_usernames(users: Server) -> None:
    """Successes (the fixture's logins, bob's below) do not count against the address."""
    for i in range(MAX_FAILURES_PER_CLIENT):
        await fail(users, f"nobody-{i}")
        if i == MAX_FAILURES_PER_CLIENT // 2:
            await users.gql(LOGIN, {"u": "bob", "p": PASSWORD})
    error = await refused(users, "carol")
    assert error["extensions"].items() >= {"code": "RATE_LIMITED", "field": "client"}.items()
    assert 0 < error["extensions"]["retryAfter"] <= WINDOW_SECONDS
    assert "from this address; try again in" in error["message"]


async def test_parallel_attempts_cannot_outrun_the_limit(
    users: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hazard: checking the count, then awaiting the password hash, then counting would let a burst of
    parallel requests all pass the check before the first failure is recorded."""

    def slow_verify(stored: str, password: str) -> bool:
        time.sleep(0.3)  # in a worker thread: the production hash cost, so that the requests overlap
        return users_service.verify_password(stored, password)

    monkeypatch.setattr(auth, "verify_password", slow_verify)
    bodies = await asyncio.gather(
        *(users.post(LOGIN, {"u": "alice", "p": f"guess-{i}"}) for i in range(MAX_FAILURES_PER_USERNAME + 5))
    )
    codes = sorted(body["errors"][0]["extensions"]["code"] for body in bodies)
    assert codes == ["RATE_LIMITED"] * 5 + ["UNAUTHENTICATED"] * MAX_FAILURES_PER_USERNAME


def limiter(clock: FakeClock, **options: Any) -> LoginLimiter:
    return LoginLimiter(per_username=2, per_client=3, window=100, clock=clock, **options)


def test_an_attempt_counts_until_it_ends() -> None:
    clock = FakeClock()
    limits = limiter(clock)
    first = limits.begin("alice", "10.0.0.1")
    limits.begin("alice", "10.0.0.1")
    with pytest.raises(TooManyAttempts) as refused:
        limits.begin("alice", "10.0.0.2")
    assert (refused.value.field, refused.value.retry_after) == ("username", 100)
    limits.abandoned(first)  # e.g. the database failed: not a wrong password
    limits.begin("alice", "10.0.0.1")
    limits.begin("bob", "10.0.0.1")
    with pytest.raises(TooManyAttempts) as refused:
        limits.begin("carol", "10.0.0.1")
    assert (refused.value.field, refused.value.code) == ("client", "RATE_LIMITED")
    limits.begin("bob", None)  # without an address only the username counts


def test_expired_failures_are_dropped() -> None:
    clock = FakeClock()
    limits = limiter(clock)
    for i in range(10):
        limits.begin(f"user-{i}", f"10.0.0.{i}")
    assert (len(limits.usernames), len(limits.clients)) == (10, 10)
    clock.now += 100
    limits.begin("late", "10.0.1.1")
    assert (len(limits.usernames), len(limits.clients)) == (1, 1)


def test_tracked_keys_are_capped_oldest_first() -> None:
    clock = FakeClock()
    limits = limiter(clock, max_keys=3)
    for name in ("a", "b", "c", "d"):
        limits.begin(name, None)
        limits.begin(name, None)
        clock.now += 1
    assert len(limits.usernames) == 3
    limits.begin("a", None)  # "a" was forgotten first
    with pytest.raises(TooManyAttempts):
        limits.begin("d", None)
