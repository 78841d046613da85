"""Waiting on the emulator's own signals (log writes, pod changes), never on the clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aihub.engine.executors.base import JobKey
from aihub.storage.local import LocalLogStore
from tests.k8s.conftest import NAMESPACE
from tests.k8s.emulator import Emulator


async def log_contains(emu: Emulator, pod: str, needle: bytes, *, timeout: float = 30) -> None:
    """Return once the main container of ``pod`` has written ``needle``."""
    buffer = emu.log(NAMESPACE, pod, "main")
    async with asyncio.timeout(timeout):
        while True:
            changed = buffer.changed
            if needle in b"".join(buffer.lines):
                return
            await changed.wait()


def waiting_for(flag: Path, before: str = "ready", after: str = "released") -> str:
    """A node command that says ``before``, runs until ``flag`` exists, then says ``after``."""
    return f"echo {before}; while [ ! -e '{flag}' ]; do sleep 0.05; done; echo {after}"


async def until_requests(
    emu: Emulator, method: str, path_suffix: str, count: int, *, timeout: float = 30, **query: str
) -> None:
    """Return once the emulator has had ``count`` such requests (it records each as it arrives)."""
    async with asyncio.timeout(timeout):
        while emu.count(method, path_suffix, **query) < count:
            await emu.request_seen()


async def archived(logs: LocalLogStore, key: JobKey, line: str, *, timeout: float = 30) -> None:
    """Return once the platform's log of the attempt holds ``line`` (followed as a live view follows it)."""

    async def never() -> bool:
        return False

    async with asyncio.timeout(timeout):
        async for got in logs.follow(key.run_id, key.node, key.attempt, done=never):
            if got == line:
                return
