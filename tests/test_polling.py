"""The tests' one polling helper fails when the condition never comes, and hands back what it waited for."""

from __future__ import annotations

import pytest

from tests.polling import until, until_sync


async def test_until_returns_the_value_or_fails_naming_what() -> None:
    calls = iter([0, "", "ready"])
    assert await until(lambda: next(calls), "a value", timeout=5, interval=0) == "ready"

    async def never() -> bool:
        return False

    with pytest.raises(AssertionError, match="waiting for the impossible"):
        await until(never, "the impossible", timeout=0.05)


def test_until_sync_fails_naming_what() -> None:
    assert until_sync(lambda: 3, "three") == 3
    with pytest.raises(AssertionError, match="waiting for nothing"):
        until_sync(lambda: None, "nothing", timeout=0.05, interval=0.01)
