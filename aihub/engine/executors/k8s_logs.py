"""The logs of the Kubernetes executor's attempts: the main container's log streamed into the log store.

A log is streamed (``follow``) from the main container as soon as it runs and appended to the attempt's log
in the platform's log store, so it outlives the pod. A broken stream is re-read from the start, skipping
what the archive already holds (:class:`LogSink`); after a server restart the same happens on re-attach.
The stream's end is the container's end, unless the kubelet closed the stream early: then the container
still runs and its log is followed again. The wrapper's marker lines (exit status, outputs) are kept apart,
never archived.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from aihub.engine.executors.base import Handle
from aihub.engine.executors.k8s_client import API_TIMEOUT
from aihub.engine.executors.k8s_pod import MAIN_CONTAINER
from aihub.engine.executors.k8s_status import container_status, has_started
from aihub.engine.executors.k8s_watch import PodWatches

__all__ = ["Follower", "LogSink", "PodLogs", "append_line"]

log = logging.getLogger("aihub.engine.executors.kubernetes")

RETRY = 2.0  # seconds before a failed log stream or API read is retried
_CHUNK = 64 * 1024
_MAX_MARKER_LINE = 1024 * 1024


@dataclass
class Follower:
    """One attempt being waited for."""

    handle: Handle
    log_path: Path
    markers: list[str] = field(default_factory=list)
    ended: bool = False
    slow_since: dict[str, float] = field(default_factory=dict)
    log_task: asyncio.Task[bool] | None = None

    @property
    def pod(self) -> str:
        return str(self.handle.data["pod"])


class PodLogs:
    """Follows the main containers' logs of attempts into the log store (see the module docstring)."""

    def __init__(self, watches: PodWatches, *, log_drain: float, eof_grace: float) -> None:
        self.watches = watches
        self.log_drain = log_drain  # how long a log stream may take to end once the container has
        self.eof_grace = eof_grace  # how long a log stream's end may precede the container's in its status

    def follow(self, follower: Follower) -> None:
        """Start following the attempt's log (once its main container runs)."""
        if follower.log_task is None:
            task = asyncio.create_task(self._pump(follower), name=f"log {follower.pod}")
            follower.log_task = task

    async def cancel(self, follower: Follower) -> None:
        task, follower.log_task = follower.log_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def drain(self, follower: Follower, pod: dict[str, Any] | None, gone: bool) -> bool:
        """Let the log stream reach its end; read the log once more when it did not. True when complete."""
        complete = False
        task, follower.log_task = follower.log_task, None
        if task is not None:
            try:
                async with asyncio.timeout(self.log_drain):
                    complete = await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if not complete and not gone and has_started(container_status(pod, MAIN_CONTAINER)):
            complete = await self._read(follower, follow=False)
        return complete

    async def _pump(self, follower: Follower) -> bool:
        """Follow the main container's log into the archive; True once it was read to its end."""
        while True:
            complete = await self._read(follower, follow=True)
            # The stream's end is the container's end (the pod's status shows it a moment later), unless
            # the stream was closed early (the kubelet's idle timeout of streams): then the container still
            # runs, and its log is followed again.
            if complete and await self.watches.until(follower.pod, _main_ended, self.eof_grace):
                return True
            if follower.ended:
                return complete
            if not complete:
                await asyncio.sleep(RETRY)  # a broken stream or an API hiccup: read it again shortly

    async def _read(self, follower: Follower, *, follow: bool) -> bool:
        """Read the main container's log from its start into the archive (skipping what it holds)."""
        skip = await asyncio.to_thread(_log_position, follower.log_path)
        sink = LogSink(follower.handle.data["mark"], *skip)
        timeout = aiohttp.ClientTimeout(sock_connect=API_TIMEOUT) if follow else API_TIMEOUT
        try:
            resp = await self.watches.api.read_namespaced_pod_log(
                follower.pod,
                self.watches.namespace,
                container=MAIN_CONTAINER,
                follow=follow,
                _preload_content=False,
                _request_timeout=timeout,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.info("kubernetes executor: log of %s unavailable: %s", follower.pod, exc)
            return False
        if not await _copy(resp, follower, sink):
            return False
        follower.markers = sink.markers
        return True


async def _copy(resp: Any, follower: Follower, sink: LogSink) -> bool:
    """Copy a log response through ``sink`` into the archive; False when it failed or broke."""
    try:
        if resp.status != 200:
            log.info("kubernetes executor: log of %s: HTTP %s", follower.pod, resp.status)
            return False
        async for chunk in resp.content.iter_chunked(_CHUNK):
            await _append(follower.log_path, sink.feed(chunk))
        await _append(follower.log_path, sink.finish())
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.info("kubernetes executor: log stream of %s broke: %s", follower.pod, exc)
        return False
    finally:
        resp.release()
    return True


def _main_ended(pod: dict[str, Any] | None, gone: bool) -> bool:
    main = (container_status(pod, MAIN_CONTAINER) or {}).get("state") or {}
    return gone or "terminated" in main


class LogSink:
    """Splits the main container's log stream: marker lines are kept apart, the rest goes to the archive.

    A marker may follow output that did not end its line (``printf 'no newline'``): what comes before it
    is output. A stream always starts at the beginning of the container's log; the first ``skip_lines``
    lines and ``skip_bytes`` bytes of output are what the archive already holds and are dropped. A line is
    held in memory only up to a bound (markers are short); a longer one passes through in pieces.
    """

    def __init__(self, mark: str, skip_lines: int, skip_bytes: int) -> None:
        self.mark = mark.encode() + b" "
        self.skip_lines = skip_lines
        self.skip_bytes = skip_bytes
        self.markers: list[str] = []
        self._line = b""

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        buf = self._line + data
        start = 0
        while (nl := buf.find(b"\n", start)) >= 0:
            self._complete(buf[start : nl + 1], out)
            start = nl + 1
        rest = buf[start:]
        if len(rest) > _MAX_MARKER_LINE:  # a long line: pass it on, keeping what may start a marker
            at = rest.find(self.mark)
            if at < 0:
                cut = len(rest) - (len(self.mark) - 1)
            elif at > 0:
                cut = at
            else:  # a "marker" that never ends is output
                cut = len(rest)
            self._emit(rest[:cut], out)
            rest = rest[cut:]
        self._line = rest
        return bytes(out)

    def _complete(self, line: bytes, out: bytearray) -> None:
        at = line.find(self.mark)
        if at < 0:
            self._emit(line, out)
            return
        if at:
            self._emit(line[:at], out)
        self.markers.append(line[at + len(self.mark) :].decode(errors="replace").rstrip("\n"))

    def finish(self) -> bytes:
        out = bytearray()
        if self._line:
            self._emit(self._line, out)
            self._line = b""
        return bytes(out)

    def _emit(self, piece: bytes, out: bytearray) -> None:
        if self.skip_lines:
            if piece.endswith(b"\n"):
                self.skip_lines -= 1
            return
        if self.skip_bytes:
            cut = min(self.skip_bytes, len(piece))
            self.skip_bytes -= cut
            piece = piece[cut:]
        out += piece


def _log_position(path: Path) -> tuple[int, int]:
    """(complete lines, bytes after the last newline) of the archived log."""
    lines = tail = 0
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                count = block.count(b"\n")
                lines += count
                tail = len(block) - block.rindex(b"\n") - 1 if count else tail + len(block)
    except FileNotFoundError:
        pass
    return lines, tail


async def _append(path: Path, data: bytes) -> None:
    if data:
        await asyncio.to_thread(_append_sync, path, data)


async def append_line(path: Path, line: str) -> None:
    """Append a line of the platform's own, on a line of its own."""
    await asyncio.to_thread(_append_line_sync, path, line)


def _append_line_sync(path: Path, line: str) -> None:
    with open(path, "ab+") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write(line.encode() + b"\n")


def _append_sync(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)
