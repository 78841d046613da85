"""The build log of a Kaniko Job: its pod's containers' logs copied in as their lines arrive.

The logs of the build pod's containers (``clone``, then ``kaniko``) are streamed, each once it runs, into the
build log (``follow``, as the Kubernetes executor follows a node's log; the pod's state comes from a list +
watch of its own). Every read starts at the log's beginning and skips the lines the build log holds already,
so a stream the kubelet closed early or that broke is simply followed again (a break is written to the build
log; after ``STREAM_BREAKS`` unproductive breaks in a row the container is left to the end). When the Job
has finished the streams get some seconds to reach their ends; a log still incomplete then (or never
streamed) is read once, as far as it goes (:meth:`BuildLogs.finish`). Each container's log is copied up to
``_LOG_LIMIT`` bytes; no line is written twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from aihub.engine.executors.k8s_client import API_TIMEOUT, KubernetesApiError, call_options, request
from aihub.engine.executors.k8s_status import all_container_statuses, has_started
from aihub.engine.executors.k8s_watch import Check, newest, watch_until

__all__ = ["CONTAINERS", "STREAM_BREAKS", "BuildLogs", "container_status"]

logger = logging.getLogger("aihub.builds")

CONTAINERS = ("clone", "kaniko")  # the build pod's containers, in the order they run
STREAM_BREAKS = 5  # unproductive breaks in a row after which a container's log is left to the build's end
STREAM_ERRORS = (KubernetesApiError, aiohttp.ClientError, OSError, TimeoutError)
_LOG_LIMIT = 4 * 1024 * 1024  # bytes of each container's log copied into the build log
_CHUNK = 64 * 1024
_TAIL = 15  # log lines quoted in a failure's message
_STEADY = 30.0  # a stream that lasted this long before it broke was no failure to connect


@dataclass
class _ContainerLog:
    """One container's log as copied into the build log. A read starts at the log's beginning: the lines
    the build log holds already are skipped, and an unfinished last line waits for its end (or the log's)."""

    name: str
    write: Callable[[str], None]
    lines: int = 0  # lines of the container's log (newline-ended) in the build log
    complete: bool = False  # read to its end, or to _LOG_LIMIT
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_TAIL))
    _skip: int = field(default=0, init=False)  # lines of this read still to skip
    _rest: bytes = field(default=b"", init=False)  # this read's unfinished last line
    _size: int = field(default=0, init=False)  # bytes this read received

    def restart(self) -> None:
        """A new read from the log's beginning."""
        self._skip, self._rest, self._size = self.lines, b"", 0

    def feed(self, data: bytes) -> None:
        self._size += len(data)
        *lines, self._rest = (self._rest + data).split(b"\n")
        for line in lines:
            self._line(line)

    def finish(self) -> None:
        """The read reached the log's end: an unfinished last line is a line too."""
        if self._rest:
            self._line(self._rest)
            self._rest = b""
        self.complete = True

    @property
    def capped(self) -> bool:
        """Whether the read stopped at _LOG_LIMIT (the server may stop slightly short of it)."""
        return self._size + _CHUNK > _LOG_LIMIT

    def _line(self, raw: bytes) -> None:
        if self._skip:
            self._skip -= 1
            return
        self.lines += 1
        for text in raw.decode("utf-8", errors="replace").splitlines() or [""]:
            line = f"[{self.name}] {text}"
            self.write(line)
            self.tail.append(line)


class BuildLogs:
    """The logs of one build pod's containers, followed into the build log (see the module docstring)."""

    def __init__(
        self,
        core: client.CoreV1Api,
        namespace: str,
        uid: str,
        log: Callable[[str], None],
        *,
        watch_timeout: int,
        eof_grace: float,
        log_retry: float,
    ) -> None:
        self.core, self.namespace, self.log = core, namespace, log
        self.selector = {"label_selector": f"controller-uid={uid}"}  # the Job's pod
        self.watch_timeout = watch_timeout
        self.eof_grace = eof_grace  # how long a log stream's end may precede the container's in its status
        self.log_retry = log_retry  # seconds before a broken log stream is followed again
        self.containers = [_ContainerLog(name, log) for name in CONTAINERS]

    def tail(self) -> list[str]:
        """The last lines of the build log, to quote in a failure's message."""
        return [line for container in self.containers for line in container.tail][-_TAIL:]

    async def stream(self) -> None:
        """Follow each container's log into the build log once it has started, in order (a task of the
        build, stopped by it)."""
        try:
            for container in self.containers:
                pod = await self._pod_until(_container_started(container.name), self.log)
                if has_started(container_status(pod, container.name)):
                    await self._follow(pod["metadata"]["name"], container)
        except (*STREAM_ERRORS, ApiException) as exc:
            self.log(
                f"could not follow the build pod: {_describe(exc)}; its logs are copied when the build ends"
            )
        except Exception as exc:  # a bug: the logs are still copied at the end
            logger.exception("following the build pod's logs failed")
            self.log(
                f"following the build pod's logs failed: {_describe(exc)}; they are copied when the build ends"
            )

    async def finish(self, streams: asyncio.Task[None], *, drain: float) -> dict[str, Any] | None:
        """Let the log streams reach their ends (for at most ``drain`` seconds), stop them, then read once
        the logs they did not complete; the build pod (None if there is none)."""
        if drain > 0:
            await asyncio.wait({streams}, timeout=drain)
        await stop(streams)
        try:
            listing = await request(
                self.core.list_namespaced_pod(self.namespace, **self.selector, **call_options())
            )
        except (*STREAM_ERRORS, ApiException) as exc:
            self.log(f"could not read the build pod's logs: {exc}")
            return None
        pod = newest(listing.get("items") or [])
        if pod is None:
            self.log("the build Job started no pod")
            return None
        for container in self.containers:
            if not container.complete and has_started(container_status(pod, container.name)):
                await self._read_once(pod["metadata"]["name"], container)
        return pod

    async def _read_once(self, pod: str, container: _ContainerLog) -> None:
        try:
            await self._read(pod, container, follow=False)
        except STREAM_ERRORS as exc:
            container.write(f"[{container.name}] log unavailable: {_describe(exc)}")
        else:
            container.finish()

    async def _pod_until(self, check: Check[Any], log: Callable[[str], None]) -> Any:
        def expired() -> None:
            log("the build pod watch expired; listing the build pod again")

        return await watch_until(
            self.core.list_namespaced_pod,
            self.namespace,
            self.selector,
            check,
            watch_timeout=self.watch_timeout,
            expired=expired,
        )

    async def _follow(self, pod: str, container: _ContainerLog) -> None:
        """Follow one container's log until it is complete; a stream that ended early or broke is followed
        again (see the module docstring)."""
        loop = asyncio.get_running_loop()
        breaks = 0
        while True:
            opened, lines = loop.time(), container.lines
            try:
                await self._read(pod, container, follow=True)
            except STREAM_ERRORS as exc:
                logger.info("build log stream of %s/%s broke: %s", pod, container.name, exc)
                steady = container.lines > lines or loop.time() - opened >= _STEADY
                breaks = 1 if steady else breaks + 1
                if breaks >= STREAM_BREAKS:
                    container.write(
                        f"the {container.name} container's log stream broke {breaks} times in a row "
                        f"({_describe(exc)}); its log is copied when the build ends"
                    )
                    return
                container.write(
                    f"the {container.name} container's log stream broke ({_describe(exc)}); following it again"
                )
                await asyncio.sleep(self.log_retry)
                continue
            if container.capped or await self._has_ended(container.name):
                container.finish()
                return

    async def _has_ended(self, container: str) -> bool:
        """Whether the container shows terminated (or its pod has ended or gone) within ``eof_grace``: a log
        stream's end precedes that status by a moment; a stream the kubelet closed early does not."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.eof_grace):
                return bool(await self._pod_until(_container_ended(container), _quiet))
        return False

    async def _read(self, pod: str, container: _ContainerLog, *, follow: bool) -> None:
        """Read the container's log from its start into the build log, skipping the lines it holds already;
        a follow lasts until the container ends (or the server ends the stream)."""
        container.restart()
        timeout = aiohttp.ClientTimeout(sock_connect=API_TIMEOUT) if follow else API_TIMEOUT
        resp = await self.core.read_namespaced_pod_log(
            pod,
            self.namespace,
            container=container.name,
            follow=follow,
            limit_bytes=_LOG_LIMIT,
            _preload_content=False,
            _request_timeout=timeout,
        )
        try:
            if not 200 <= resp.status < 300:
                raise KubernetesApiError.from_body(resp.status, await resp.read())
            async for chunk in resp.content.iter_chunked(_CHUNK):
                container.feed(chunk)
        finally:
            resp.release()


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel and await the log streams (their errors are logged by the task itself)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _quiet(line: str) -> None:
    """A log for checks whose expired watches are not worth a line in the build log."""


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _container_started(container: str) -> Check[dict[str, Any]]:
    """The pod once the container has started, or once it never will (the pod ended or went)."""

    def check(pod: dict[str, Any] | None, event: str) -> dict[str, Any] | None:
        if pod is None:
            return None  # not created yet
        if event == "DELETED" or _pod_over(pod) or has_started(container_status(pod, container)):
            return pod
        return None

    return check


def _container_ended(container: str) -> Check[bool]:
    def check(pod: dict[str, Any] | None, event: str) -> bool | None:
        state = (container_status(pod, container) or {}).get("state") or {}
        return True if pod is None or event == "DELETED" or _pod_over(pod) or "terminated" in state else None

    return check


def _pod_over(pod: dict[str, Any]) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return phase in ("Succeeded", "Failed") or bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def container_status(pod: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    """The status of the container (init or main) called ``name``."""
    return next((c for c in all_container_statuses(pod) if c.get("name") == name), None)
