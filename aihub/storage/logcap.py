"""A cap on the bytes stored per attempt log (``AIHUB_MAX_LOG_BYTES``): the head and the tail are kept, with a
line in between saying how much was dropped.

Nodes write their logs themselves (appending: ``>>``), so the cap is applied from outside: every
``CHECK_SECONDS`` the capper looks at the logs of the attempts this engine runs, and one over the limit is
compacted in place — its first quarter stays, then the note, then its last quarter — which leaves room for
half the limit before the next compaction. Writers append at the end whatever the file's size, so they go on
undisturbed. Between two checks a log can overshoot the limit by what a node writes in ``CHECK_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0
_NOTE = "\n[aihub: {dropped} bytes of this log were dropped here (the limit is {limit} bytes, AIHUB_MAX_LOG_BYTES)]\n"
_NOTE_PATTERN = re.compile(rb"\n\[aihub: (\d+) bytes of this log were dropped here \(the limit is \d+ bytes")


def _keep(max_bytes: int) -> int:
    return max(1, max_bytes // 4)


def cap_log_file(path: Path, max_bytes: int) -> int:
    """Compact ``path`` if it is over ``max_bytes``; returns the bytes dropped by this call (0: nothing)."""
    keep = _keep(max_bytes)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        size = os.fstat(fd).st_size
        if size <= max_bytes:
            return 0
        head = os.pread(fd, keep, 0)
        noted = os.pread(fd, 512, keep)
        earlier = _NOTE_PATTERN.match(noted)
        start = keep + (earlier.end() + noted[earlier.end() :].index(b"\n") + 1 if earlier else 0)
        tail_from = size - keep
        tail = os.pread(fd, keep, tail_from)
        dropped = tail_from - start + (int(earlier.group(1)) if earlier else 0)
        note = _NOTE.format(dropped=dropped, limit=max_bytes).encode()
        os.pwrite(fd, note + tail, len(head))
        # what a node appended meanwhile is lost with the middle: the next note counts from the new end
        os.ftruncate(fd, len(head) + len(note) + len(tail))
        return tail_from - start
    finally:
        os.close(fd)


ActiveLogs = Callable[[], Iterable[Path]]


class LogCapper:
    """Caps the logs ``active()`` names, every ``CHECK_SECONDS``, until closed."""

    def __init__(self, active: ActiveLogs, max_bytes: int, *, interval: float = CHECK_SECONDS) -> None:
        self.active = active
        self.max_bytes = max_bytes
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="log capper")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def cap(self, path: Path) -> None:
        """Cap one log now (an attempt that has just ended: its last look). A log within the limit, nearly
        always, costs one ``stat`` here (microseconds: the node has just closed the file) instead of a trip to
        a worker thread and back, which cost the engine about 0.2 ms per node (issue 18)."""
        try:
            if os.stat(path).st_size <= self.max_bytes:
                return
        except FileNotFoundError:
            return
        except OSError:
            pass  # the thread's try says what is wrong
        try:
            dropped = await asyncio.to_thread(cap_log_file, path, self.max_bytes)
        except OSError as exc:
            log.warning("could not cap the log %s: %s", path, exc)
            return
        if dropped:
            log.info("log %s over %d bytes: %d bytes dropped from its middle", path, self.max_bytes, dropped)

    async def check(self) -> None:
        """One pass over the active logs."""
        for path in list(self.active()):
            try:
                dropped = await asyncio.to_thread(cap_log_file, path, self.max_bytes)
            except OSError as exc:
                log.warning("could not cap the log %s: %s", path, exc)
                continue
            if dropped:
                log.info(
                    "log %s over %d bytes: %d bytes dropped from its middle", path, self.max_bytes, dropped
                )

    async def _loop(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # a bad pass must not end the capping for good
                log.exception("log capper pass failed")
            await asyncio.sleep(self.interval)
