"""Waiting on the emulator's own signals (log writes, pod changes), never on the clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from tests.k8s.conftest import NAMESPACE
from tests.k8s.emulator import Emulator, Obj


async def log_contains(emu: Emulator, pod: str, needle: bytes, *, timeout: float = 30) -> None:
    """Return once the main container of ``pod`` has written ``needle``."""
    buffer = emu.log(NAMESPACE, pod, "main")
    async with asyncio.timeout(timeout):
        while True:
            changed = buffer.changed
            if needle in b"".join(buffer.lines):
                return
            await changed.wait()


async def pod_reaches(
    emu: Emulator, pod: str, check: Callable[[Obj | None], bool], *, timeout: float = 30
) -> None:
    """Return once ``check(pod object or None)`` holds."""
    seen = asyncio.Event()

    def listener(event: str, obj: Obj) -> None:
        if obj["metadata"]["name"] == pod:
            seen.set()

    emu.listeners.append(listener)
    try:
        async with asyncio.timeout(timeout):
            while True:
                seen.clear()
                if check(emu.pod(NAMESPACE, pod)):
                    return
                await seen.wait()
    finally:
        emu.listeners.remove(listener)


def waiting_for(flag: Path, before: str = "ready", after: str = "released") -> str:
    """A node command that says ``before``, runs until ``flag`` exists, then says ``after``."""
    return f"echo {before}; while [ ! -e '{flag}' ]; do sleep 0.05; done; echo {after}"
