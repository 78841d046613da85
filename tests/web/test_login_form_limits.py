"""The login form under brute-force protection: after too many failures it answers 429 with ``Retry-After``
and the message, and CSRF is still checked first (a forged post neither logs in nor counts)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aihub.services.ratelimit import MAX_FAILURES_PER_USERNAME, WINDOW_SECONDS, login_limiter
from tests.web.webapp import PASSWORD, Client, Web


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    """The process-wide limiter on a clock the test moves, empty before and after the test."""
    fake = FakeClock()
    login_limiter.reset()
    monkeypatch.setattr(login_limiter, "clock", fake)
    yield fake
    login_limiter.reset()


async def anonymous(web: Web) -> Client:
    client = web.anonymous()
    await client.get("/login")
    return client


async def test_the_form_answers_429_after_too_many_failures(web: Web, clock: FakeClock) -> None:
    client = await anonymous(web)
    for _ in range(MAX_FAILURES_PER_USERNAME):
        response = await client.post("/login", {"username": "alice", "password": "nope", "next": "/"})
        assert response.status_code == 401
    response = await client.post("/login", {"username": "alice", "password": PASSWORD, "next": "/runs"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == str(WINDOW_SECONDS)
    assert f"too many failed logins for this username; try again in {WINDOW_SECONDS} seconds" in response.text
    assert 'value="/runs"' in response.text and 'value="alice"' in response.text
    assert "aihub_session" not in client.http.cookies
    clock.now += WINDOW_SECONDS + 1
    response = await client.post("/login", {"username": "alice", "password": PASSWORD, "next": "/runs"})
    assert response.status_code == 303 and response.headers["location"] == "/runs"


async def test_csrf_comes_first(web: Web) -> None:
    client = await anonymous(web)
    for _ in range(MAX_FAILURES_PER_USERNAME):
        response = await client.post("/login", {"username": "alice", "password": PASSWORD}, csrf=False)
        assert response.status_code == 403
    response = await client.post("/login", {"username": "alice", "password": "nope"}, csrf=False)
    assert response.status_code == 403
    for _ in range(MAX_FAILURES_PER_USERNAME):  # none of the forged posts counted
        response = await client.post("/login", {"username": "alice", "password": "nope"})
        assert response.status_code == 401
    # locked: a forged post is still refused for its CSRF token, not with the lock's answer
    response = await client.post(
        "/login", {"username": "alice", "password": PASSWORD, "csrf_token": "forged"}, csrf=False
    )
    assert response.status_code == 403
    response = await client.post("/login", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
