"""Waiting for a condition with a deadline: the one polling helper of the tests (never a bare sleep)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


async def until(
    check: Callable[[], Any], what: str = "condition", *, timeout: float = 30, interval: float = 0.02
) -> Any:
    """Call ``check`` (sync or async) until it returns something true, and return that; fails naming ``what``
    when ``timeout`` seconds pass first."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = check()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return result
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


def until_sync(
    check: Callable[[], Any], what: str = "condition", *, timeout: float = 30, interval: float = 0.05
) -> Any:
    """:func:`until` for code without an event loop (a server in another process, a browser page)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)  # polling another process's state, with a deadline


def gate_wait(gate: Path | str, exists: str = "-f") -> str:
    """A node's shell command that waits until ``gate`` exists (``test exists gate``) — or until the gate's
    directory is gone: a test that fails before it makes the gate leaves no node waiting for ever once its
    directory is removed (``host_dir`` and the like are, at the test's end). ``gate`` is a path, or a shell
    variable's name (``$GATE``) for a gate the node is given in its environment."""
    variable = isinstance(gate, str) and gate.startswith("$")
    parent = f"${{{str(gate)[1:]}%/*}}" if variable else Path(gate).parent
    return f'while [ ! {exists} "{gate}" ] && [ -d "{parent}" ]; do sleep 0.05; done'
