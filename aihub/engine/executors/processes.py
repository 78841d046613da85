"""Waiting for file descriptors and child processes on the event loop, without a blocked worker thread per wait
(a node may run for hours; the default thread pool has a handful of threads for the whole server)."""

from __future__ import annotations

import asyncio
import os
import subprocess


async def readable(fd: int) -> None:
    """Return once ``fd`` is readable (data, or its end)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def child_ended(child: subprocess.Popen[bytes]) -> None:
    """Wait for our child ``child`` to end (a pidfd; else polling), then reap it."""
    try:
        fd = os.pidfd_open(child.pid)
    except (AttributeError, OSError):  # no pidfds here (old kernel, not Linux), or reaped already
        delay = 0.005
        while child.poll() is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        return
    try:
        if child.poll() is None:
            await readable(fd)
    finally:
        os.close(fd)
    child.wait()
