"""The tests' one polling helper fails when the condition never comes, and hands back what it waited for; a
node's gate stops waiting when its gate is made or its directory is gone."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.polling import gate_wait, until, until_sync


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


@pytest.mark.parametrize("by_variable", [False, True])
def test_a_gate_ends_when_made_or_when_its_directory_is_gone(tmp_path: Path, by_variable: bool) -> None:
    for end in ("made", "removed"):
        folder = tmp_path / f"a dir {end}"  # (a space: the paths are quoted)
        folder.mkdir()
        gate = folder / "gate"
        command = gate_wait("$GATE") if by_variable else gate_wait(gate)
        waiter = subprocess.Popen(["sh", "-c", command], env={**os.environ, "GATE": str(gate)})
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                waiter.wait(timeout=0.3)  # (still waiting: neither has happened)
            if end == "made":
                gate.touch()
            else:
                shutil.rmtree(folder)
            assert waiter.wait(timeout=10) == 0
        finally:
            waiter.kill()
            waiter.wait()
