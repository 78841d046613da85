"""The Kubernetes executor: each attempt of a node is one pod (see :mod:`aihub.engine.executors.k8s_pod`).

How an attempt is followed:

- **One pod watch and one event watch for the whole executor** (list, then watch from the list's
  ``resourceVersion``; a watch that ends is resumed from the last version seen, and an expired one — 410
  Gone — is replaced by a fresh list). The watches keep a cache of our pods (label ``aihub/run``) and of
  their Kubernetes events; ``wait`` reads that cache and is woken by changes to its pod, so a thousand
  running attempts cost two HTTP streams, not a thousand.
- **Logs** are streamed (``follow``) from the main container as soon as it runs, appended to the attempt's
  log in the platform's log store, so they outlive the pod. A broken stream is re-read from the start,
  skipping what the archive already holds; after a server restart the same happens on re-attach.
- **Outputs** arrive as marker lines the pod's wrapper writes after the node's command exits 0 (text values
  in base64, path outputs as the digest of the archive it uploaded to the platform's API); marker lines are
  not archived. :func:`store_uploaded_output` is what the API's upload route uses to store such an upload.
- **The end** of an attempt is the main container's ``terminated`` state, or the pod's failure (an init
  container failed, eviction), or its disappearance. Image pull errors fail the attempt after a grace period;
  errors that never heal (an invalid image name) at once. The report, a description of the pod and its
  events are saved next to the log (``<attempt>.pod.json``) and the pod is deleted, so ``wait``,
  ``describe`` and ``events`` still answer after the pod and the server are gone.
- **Restart safety**: the handle is plain JSON and ``find`` re-attaches by labels (``aihub/run``,
  ``aihub/node``, ``aihub/attempt``; the ``aihub/key`` annotation tells look-alikes apart). Starting an
  attempt whose pod exists already (a restart between create and record) adopts that pod.
- **Stop** deletes the pod with ``gracePeriodSeconds``: the kubelet sends SIGTERM (the wrapper passes it to
  the node's command) and SIGKILL after the grace period; ``wait`` then reports ``stopped``.

The executor talks to the API server with ``kubernetes-asyncio`` and keeps pods as plain JSON dicts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import os
import secrets
import shutil
import tarfile
import tempfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from aihub.engine.artifacts import ArtifactError, pack, unpack
from aihub.engine.executors.base import (
    ExitReport,
    Handle,
    Job,
    JobKey,
    OutputDecl,
    OutputValue,
    SharedWaits,
    read_json,
    write_json,
)
from aihub.engine.executors.k8s_client import (
    API_TIMEOUT,
    Cluster,
    KubernetesApiError,
    call_options,
    request,
)
from aihub.engine.executors.k8s_pod import (
    ANNOTATION_KEY,
    ANNOTATION_MARK,
    ANNOTATION_MAX_TEXT,
    ANNOTATION_OUTPUTS,
    INIT_CONTAINER,
    LABEL_RUN,
    MAIN_CONTAINER,
    LaunchError,
    PodOptions,
    build_pod,
    key_annotation,
    key_selector,
    pod_name,
)
from aihub.engine.outputs import OutputError, read_text_output
from aihub.settings import Settings
from aihub.storage.base import ArtifactMissing, ArtifactStore, LogStore, StoreError

__all__ = ["DEFAULT_HELPER_IMAGE", "KubernetesApiError", "KubernetesExecutor", "store_uploaded_output"]

log = logging.getLogger(__name__)

DEFAULT_HELPER_IMAGE = "busybox:1.36.1-musl"  # static busybox at /bin/busybox
DEFAULT_IMAGE = "python:3.11-slim"
#: waiting reasons that never heal by themselves: the attempt fails at once
FATAL_WAITING = frozenset({"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError"})
#: waiting reasons that may heal (a registry hiccup): the attempt fails when they last ``pull_grace`` seconds
SLOW_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff", "CreateContainerError"})
_RESYNC = 60.0  # a follower re-reads its pod at least this often, whatever the watch says
_RETRY = 2.0  # seconds before a failed log stream or API read is retried
_CHUNK = 64 * 1024
_MAX_MARKER_LINE = 1024 * 1024
_EVENTS_PER_POD = 100
_EVENT_PODS = 5000
_GONE_KEPT = 10_000
_ROOT_KIND_KEY = "AIHUB.root"  # the pax header aihub.engine.artifacts.pack writes: "file" or "dir"


@dataclass
class _End:
    """How an attempt's pod ended, as far as Kubernetes tells."""

    exit_code: int | None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass
class _Marks:
    """What the wrapper reported on its marker lines."""

    exit: int | None = None
    done: bool = False
    input_error: str | None = None
    texts: dict[str, list[str]] = field(default_factory=dict)
    texts_done: set[str] = field(default_factory=set)
    paths: dict[str, tuple[str, int]] = field(default_factory=dict)
    uploads: dict[str, Literal["file", "dir"]] = field(default_factory=dict)  # put in the object store
    errors: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, lines: list[str]) -> _Marks:
        marks = cls()
        for line in lines:
            verb, _, rest = line.partition(" ")
            args = rest.split(" ")
            if verb == "exit" and args[0].isdigit():
                marks.exit = int(args[0])
            elif verb == "done":
                marks.done = True
            elif verb == "input-error":
                marks.input_error = rest
            elif verb == "text" and len(args) == 2:
                marks.texts.setdefault(args[0], []).append(args[1])
            elif verb == "text-end":
                marks.texts.setdefault(args[0], [])
                marks.texts_done.add(args[0])
            elif verb == "path" and len(args) == 3 and args[2].isdigit():
                marks.paths[args[0]] = (args[1], int(args[2]))
            elif verb == "upload" and len(args) == 2 and args[1] in ("file", "dir"):
                marks.uploads[args[0]] = args[1]  # type: ignore[assignment]
            elif verb == "output-error":
                marks.errors[args[0]] = args[1:]
        return marks


class _LogSink:
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


@dataclass
class _Follower:
    """One attempt being waited for."""

    handle: Handle
    log_path: Path
    markers: list[str] = field(default_factory=list)
    ended: bool = False
    slow_since: dict[str, float] = field(default_factory=dict)

    @property
    def pod(self) -> str:
        return str(self.handle.data["pod"])


class KubernetesExecutor:
    """Runs attempts as pods on a Kubernetes cluster (see the module docstring)."""

    name = "kubernetes"

    def __init__(
        self,
        artifacts: ArtifactStore,
        logs: LogStore,
        *,
        namespace: str = "aihub",
        configuration: client.Configuration | None = None,
        in_cluster: bool = False,
        kubeconfig: str | None = None,
        context: str | None = None,
        helper_image: str = DEFAULT_HELPER_IMAGE,
        default_image: str = DEFAULT_IMAGE,
        keep_pods: bool = False,
        watch_timeout: int = 300,
        pull_grace: float = 300.0,
        log_drain: float = 15.0,
        stop_margin: float = 30.0,
        eof_grace: float = 5.0,
        presign_seconds: float = 3600.0,
        max_upload_bytes: int = 50 * 1024**3,
    ) -> None:
        self.artifacts = artifacts
        self.presign_seconds = presign_seconds  # life of the presigned URLs handed to a pod
        self.max_upload_bytes = max_upload_bytes  # largest output a pod may put through its presigned URL
        self.logs = logs
        self.namespace = namespace
        self.options = PodOptions(namespace=namespace, helper_image=helper_image, default_image=default_image)
        self.keep_pods = keep_pods
        self.watch_timeout = watch_timeout
        self.pull_grace = pull_grace
        self.log_drain = log_drain
        self.stop_margin = stop_margin
        self.eof_grace = eof_grace  # how long a log stream's end may precede the container's in its status
        self._cluster = Cluster(configuration, in_cluster=in_cluster, kubeconfig=kubeconfig, context=context)
        self._core_api: client.CoreV1Api | None = None
        self._probe_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._waits = SharedWaits()
        self._pods: dict[str, dict[str, Any]] = {}
        self._gone: OrderedDict[str, dict[str, Any]] = OrderedDict()  # last state of deleted pods
        self._changes: dict[str, asyncio.Event] = {}
        self._stopping: set[str] = set()
        self._events: OrderedDict[str, dict[str, dict[str, Any]]] = OrderedDict()
        self._pods_synced = asyncio.Event()

    @classmethod
    def from_settings(
        cls, settings: Settings, artifacts: ArtifactStore, logs: LogStore
    ) -> KubernetesExecutor:
        """The executor as configured (``AIHUB_KUBERNETES_*``); the cluster is contacted in :meth:`probe`."""
        extra = {
            name: getattr(settings, f"kubernetes_{name}")
            for name in ("helper_image", "default_image", "keep_pods", "kubeconfig", "context")
            if getattr(settings, f"kubernetes_{name}", None) is not None
        }
        return cls(
            artifacts,
            logs,
            namespace=settings.kubernetes_namespace,
            in_cluster=settings.kubernetes_in_cluster,
            presign_seconds=settings.s3_presign_seconds,
            max_upload_bytes=settings.max_upload_bytes,
            **extra,
        )

    # ------------------------------------------------------------------------------------- lifecycle
    async def probe(self) -> None:
        """Load the cluster configuration (in-cluster or kubeconfig), check access, start the watches."""
        async with self._probe_lock:
            if self._core_api is not None:
                return
            api = await self._cluster.api()
            core = client.CoreV1Api(api)
            try:
                await request(core.list_namespaced_pod(self.namespace, limit=1, **call_options()))
            except (KubernetesApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                await self._cluster.close()
                raise RuntimeError(
                    f"Kubernetes executor: cannot list pods in namespace {self.namespace!r} "
                    f"at {api.configuration.host}: {exc}"
                ) from exc
            self._core_api = core
            self._spawn(self._watch_pods(), "pod watch")
            self._spawn(self._watch_events(), "event watch")
        async with asyncio.timeout(API_TIMEOUT):
            await self._pods_synced.wait()

    async def ready(self) -> None:
        """Raise unless the cluster answers a pod listing in the namespace now (``/readyz``)."""
        await request(self._core.list_namespaced_pod(self.namespace, limit=1, **call_options()))

    @property
    def _core(self) -> client.CoreV1Api:
        if self._core_api is None:
            raise RuntimeError("KubernetesExecutor.probe() was not awaited")
        return self._core_api

    async def close(self) -> None:
        """Stop following attempts and watching. Pods keep running: the next server re-attaches to them."""
        await self._waits.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._pods_synced = asyncio.Event()  # a later probe() starts from a fresh list
        self._pods.clear()
        await self._cluster.close()
        self._core_api = None

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("kubernetes executor: %s failed", task.get_name(), exc_info=task.exception())

    # ----------------------------------------------------------------------------------------- start
    async def start(self, job: Job) -> Handle:
        await self.probe()
        name = pod_name(job.key)
        log_path = self.logs.path(job.key.run_id, job.key.node, job.key.attempt)
        mark = f"::aihub-{secrets.token_hex(8)}::"
        try:
            kinds = await self._input_kinds(job)
            urls = await self._presigned(job)
            manifest = build_pod(job, self.options, mark=mark, input_kinds=kinds, urls=urls)
        except LaunchError as exc:
            return _failed_handle(job.key, name, log_path, str(exc))
        try:
            created = await request(
                self._core.create_namespaced_pod(self.namespace, manifest, **call_options())
            )
        except KubernetesApiError as exc:
            if exc.status == 409:  # started before a restart, then not recorded: the same attempt
                existing = await self._find(job.key, ask_server=True)
                if existing is not None:
                    return existing
            return _failed_handle(job.key, name, log_path, f"Kubernetes refused the pod: {exc}")
        return Handle(self.name, name, _handle_data(created, log_path))

    async def _presigned(self, job: Job) -> dict[str, str]:
        """The attempt's presigned URLs when the store gives them (an object store; see aihub.storage.s3)."""
        if not getattr(self.artifacts, "presigns", False):
            return {}
        key = job.key
        try:
            return await self.artifacts.attempt_urls(  # type: ignore[attr-defined, no-any-return]
                key.run_id,
                key.node,
                key.attempt,
                {art.name: art.digest for art in job.artifacts_in},
                [out.name for out in job.outputs if out.type == "path"],
                self.presign_seconds,
            )
        except StoreError as exc:
            raise LaunchError(str(exc)) from exc

    async def _input_kinds(self, job: Job) -> dict[str, Literal["file", "dir"]]:
        kinds: dict[str, Literal["file", "dir"]] = {}
        for art in job.artifacts_in:
            try:
                async with self.artifacts.open(art.digest) as archive:
                    kinds[art.name] = await asyncio.to_thread(archive_kind, archive)
            except (ArtifactMissing, StoreError) as exc:
                raise LaunchError(f"input '{art.name}': {exc}") from None
            except (OSError, tarfile.TarError) as exc:
                raise LaunchError(f"input '{art.name}': artifact {art.digest} is unreadable: {exc}") from exc
        return kinds

    # ------------------------------------------------------------------------------------------ find
    async def find(self, key: JobKey) -> Handle | None:
        """The attempt's pod, by its labels (from the watch's cache, which is complete once probed), else
        the report saved when it ended; None when it never started."""
        await self.probe()
        return await self._find(key, ask_server=False)

    async def _find(self, key: JobKey, *, ask_server: bool) -> Handle | None:
        log_path = self.logs.path(key.run_id, key.node, key.attempt)
        if ask_server:
            listing = await request(
                self._core.list_namespaced_pod(
                    self.namespace, label_selector=key_selector(key), **call_options()
                )
            )
            pods = listing.get("items") or []
        else:
            labels = dict(part.split("=", 1) for part in key_selector(key).split(","))
            pods = [p for p in self._pods.values() if labels.items() <= _labels(p).items()]
        wanted = key_annotation(key)
        for pod in pods:
            if _annotations(pod).get(ANNOTATION_KEY) == wanted:
                return Handle(self.name, pod["metadata"]["name"], _handle_data(pod, log_path))
        saved = await asyncio.to_thread(read_json, _saved_path(log_path))
        if saved is not None:
            return Handle.from_json(saved["handle"])
        return None

    # ------------------------------------------------------------------------------------------ wait
    async def wait(self, handle: Handle) -> ExitReport:
        return await self._waits.wait(handle.id, lambda: self._wait(handle))

    async def _wait(self, handle: Handle) -> ExitReport:
        data = handle.data
        log_path = Path(data["log"])
        if data.get("error"):
            return ExitReport(exit_code=None, error=data["error"])
        await self.probe()
        saved = await asyncio.to_thread(read_json, _saved_path(log_path))
        if saved is not None:  # ended before (maybe the pod outlived a crash right after the report)
            if not self.keep_pods:
                await self._delete_pod(handle.id, 0)
            return ExitReport.from_json(saved["report"])
        follower = _Follower(handle, log_path)
        log_task: asyncio.Task[bool] | None = None
        try:
            while True:
                changed = self._changed(handle.id)
                pod, gone = await self._pod_state(handle.id)
                main = _container_status(pod, MAIN_CONTAINER)
                if log_task is None and not gone and _has_started(main):
                    log_task = asyncio.create_task(self._pump_log(follower), name=f"log {handle.id}")
                end = _ended(pod, gone, handle.id in self._stopping)
                if end is None:
                    end, delay = self._stuck(follower, pod)
                    if end is not None:
                        await self._delete_pod(handle.id, 0)
                if end is not None:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await changed.wait()
            follower.ended = True
            complete = await self._drain_log(follower, log_task, pod, gone)
            log_task = None
            report = await self._report(follower, end, complete)
            await self._save(follower, report, pod)
        finally:
            if log_task is not None:
                log_task.cancel()
                await asyncio.gather(log_task, return_exceptions=True)
            self._gone.pop(handle.id, None)
            self._stopping.discard(handle.id)
        if not self.keep_pods:
            await self._delete_pod(handle.id, 0)
        return report

    def _changed(self, name: str) -> asyncio.Event:
        """An event set at the next change of pod ``name`` (take it *before* reading the pod's state)."""
        return self._changes.setdefault(name, asyncio.Event())

    def _notify(self, name: str) -> None:
        event = self._changes.pop(name, None)
        if event is not None:
            event.set()

    async def _pod_state(self, name: str) -> tuple[dict[str, Any] | None, bool]:
        """(the pod as last seen, whether it is gone). A pod the watch has not shown yet is read directly."""
        if name in self._pods:
            return self._pods[name], False
        if name in self._gone:
            return self._gone[name], True
        try:
            return await request(
                self._core.read_namespaced_pod(name, self.namespace, **call_options())
            ), False
        except KubernetesApiError as exc:
            if exc.status == 404:
                return None, True
            log.warning("kubernetes executor: reading pod %s failed: %s", name, exc)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("kubernetes executor: reading pod %s failed: %s", name, exc)
        return None, False

    def _stuck(self, follower: _Follower, pod: dict[str, Any] | None) -> tuple[_End | None, float]:
        """A pod whose containers cannot start: the end to report (or None), and when to look again."""
        now = asyncio.get_running_loop().time()
        delay = _RESYNC if pod is not None else _RETRY
        for status in _all_container_statuses(pod):
            waiting = (status.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason", "")
            what = f"container {status.get('name')}: {reason}: {waiting.get('message', '')}".rstrip(": ")
            if reason in FATAL_WAITING:
                return _End(None, f"cannot start: {what}"), 0
            if reason in SLOW_WAITING:
                since = follower.slow_since.setdefault(reason, now)
                if now - since >= self.pull_grace:
                    return _End(None, f"cannot start after {self.pull_grace:g} s: {what}"), 0
                delay = min(delay, since + self.pull_grace - now)
        return None, max(delay, 0.0)

    # ------------------------------------------------------------------------------------------ logs
    async def _pump_log(self, follower: _Follower) -> bool:
        """Follow the main container's log into the archive; True once it was read to its end."""
        while True:
            complete = await self._read_log(follower, follow=True)
            # The stream's end is the container's end (the pod's status shows it a moment later), unless
            # the stream was closed early (the kubelet's idle timeout of streams): then the container still
            # runs, and its log is followed again.
            if complete and await self._until_main_ended(follower.pod, self.eof_grace):
                return True
            if follower.ended:
                return complete
            if not complete:
                await asyncio.sleep(_RETRY)  # a broken stream or an API hiccup: read it again shortly

    async def _until_main_ended(self, name: str, within: float) -> bool:
        """Whether the pod's main container ended (or the pod is gone) within ``within`` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while True:
                    changed = self._changed(name)
                    pod, gone = await self._pod_state(name)
                    main = (_container_status(pod, MAIN_CONTAINER) or {}).get("state") or {}
                    if gone or "terminated" in main:
                        return True
                    await changed.wait()
        return False

    async def _drain_log(
        self, follower: _Follower, task: asyncio.Task[bool] | None, pod: dict[str, Any] | None, gone: bool
    ) -> bool:
        """Let the log stream reach its end; read the log once more when it did not. True when complete."""
        complete = False
        if task is not None:
            try:
                async with asyncio.timeout(self.log_drain):
                    complete = await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if not complete and not gone and _has_started(_container_status(pod, MAIN_CONTAINER)):
            complete = await self._read_log(follower, follow=False)
        return complete

    async def _read_log(self, follower: _Follower, *, follow: bool) -> bool:
        """Read the main container's log from its start into the archive (skipping what it holds)."""
        skip = await asyncio.to_thread(_log_position, follower.log_path)
        sink = _LogSink(follower.handle.data["mark"], *skip)
        timeout = aiohttp.ClientTimeout(sock_connect=API_TIMEOUT) if follow else API_TIMEOUT
        try:
            resp = await self._core.read_namespaced_pod_log(
                follower.pod,
                self.namespace,
                container=MAIN_CONTAINER,
                follow=follow,
                _preload_content=False,
                _request_timeout=timeout,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.info("kubernetes executor: log of %s unavailable: %s", follower.pod, exc)
            return False
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
        follower.markers = sink.markers
        return True

    # ---------------------------------------------------------------------------------------- report
    async def _report(self, follower: _Follower, end: _End, log_complete: bool) -> ExitReport:
        data = follower.handle.data
        stopped = follower.pod in self._stopping
        marks = _Marks.parse(follower.markers)
        report = ExitReport(
            exit_code=end.exit_code,
            error=end.error,
            started_at=end.started_at,
            finished_at=end.finished_at or datetime.now(UTC),
            stopped=stopped,
        )
        if marks.input_error and not stopped:
            report.exit_code, report.error = None, marks.input_error
        elif report.exit_code == 0 and not stopped and report.error is None:
            decls = [OutputDecl(**o) for o in data["outputs"]]
            if decls and not (log_complete and marks.done):
                report.error = "the outputs were not reported: the pod's log could not be read to its end"
            elif decls:
                report.outputs, report.error = await self._outputs(
                    decls, marks, data["max_text"], data["key"]
                )
        elif stopped and report.error is None and report.exit_code is None:
            report.error = "stopped before its command ended"
        if report.error:
            await _append_line(follower.log_path, f"aihub: {report.error}")
        return report

    async def _outputs(
        self, decls: list[OutputDecl], marks: _Marks, max_text: int, key: dict[str, Any]
    ) -> tuple[dict[str, OutputValue], str | None]:
        values: dict[str, OutputValue] = {}
        try:
            for decl in decls:
                if decl.type == "path" and decl.name in marks.uploads and decl.name not in marks.errors:
                    values[decl.name] = await self._take_upload(decl, marks.uploads[decl.name], key)
                    continue
                values[decl.name] = await self._output(decl, marks, max_text)
        except OutputError as exc:
            return {}, str(exc)
        return values, None

    async def _take_upload(
        self, decl: OutputDecl, kind: Literal["file", "dir"], key: dict[str, Any]
    ) -> OutputValue:
        """An output the pod put in the object store with its presigned URL: fetched, checked and repacked
        like an upload through the API (``store_uploaded_output``), then stored under its digest."""
        staging = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=".pod-upload-"))
        upload = staging / "upload.tar.gz"
        try:
            await self.artifacts.take_upload(  # type: ignore[attr-defined]
                key["run_id"], key["node"], key["attempt"], decl.name, upload, max_bytes=self.max_upload_bytes
            )
            digest, size = await store_uploaded_output(upload, kind, self.artifacts)
        except ArtifactMissing:
            raise OutputError(
                f"output '{decl.name}': the pod reported an upload the store does not hold"
            ) from None
        except (ArtifactError, StoreError) as exc:
            raise OutputError(f"output '{decl.name}': {exc}") from exc
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)
        return OutputValue(decl.name, "path", decl.path, digest=digest, size=size)

    async def _output(self, decl: OutputDecl, marks: _Marks, max_text: int) -> OutputValue:
        problem = marks.errors.get(decl.name)
        if decl.type == "path":
            if problem is not None:
                raise OutputError(_path_problem(decl, problem))
            if decl.name not in marks.paths:
                raise OutputError(f"output '{decl.name}' was not reported")
            digest, size = marks.paths[decl.name]
            if not await self.artifacts.exists(digest):
                raise OutputError(f"output '{decl.name}': the uploaded artifact {digest} is not in the store")
            return OutputValue(decl.name, "path", decl.path, digest=digest, size=size)
        if problem is None and decl.name not in marks.texts_done:
            raise OutputError(f"output '{decl.name}' was not reported")
        chunks = marks.texts.get(decl.name, [])
        value = await asyncio.to_thread(_text_value, decl, problem, chunks, max_text)
        return OutputValue(decl.name, "text", value)

    async def _save(self, follower: _Follower, report: ExitReport, pod: dict[str, Any] | None) -> None:
        name = follower.pod
        snapshot = {
            "handle": follower.handle.to_json(),
            "report": report.to_json(),
            "describe": self._describe_pod(pod, name) if pod is not None else None,
            "events": await self._pod_events(name),
        }
        await asyncio.to_thread(write_json, _saved_path(follower.log_path), snapshot)
        self._events.pop(name, None)

    # ------------------------------------------------------------------------------------------ stop
    async def stop(self, handle: Handle, grace: float) -> None:
        """Delete the pod with ``grace`` seconds of grace; returns once its command ended (or is gone)."""
        if handle.data.get("error"):
            return
        name = handle.id
        self._stopping.add(name)
        await self._delete_pod(name, max(0, math.ceil(grace)))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(grace, 0) + self.stop_margin):
                while True:
                    changed = self._changed(name)
                    pod, gone = await self._pod_state(name)
                    if gone or _ended(pod, gone, True) is not None:
                        return
                    await changed.wait()

    async def _delete_pod(self, name: str, grace: int) -> None:
        try:
            await request(
                self._core.delete_namespaced_pod(
                    name, self.namespace, grace_period_seconds=grace, **call_options()
                )
            )
        except KubernetesApiError as exc:
            if exc.status != 404:
                log.warning("kubernetes executor: deleting pod %s failed: %s", name, exc)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("kubernetes executor: deleting pod %s failed: %s", name, exc)

    # -------------------------------------------------------------------------------------- describe
    async def describe(self, handle: Handle) -> dict[str, Any]:
        """The container tab: read fresh from the API server while the pod exists, else as saved."""
        name = handle.id
        if handle.data.get("error"):
            return {"executor": self.name, "pod": name, "state": f"failed to start: {handle.data['error']}"}
        await self.probe()
        saved = await asyncio.to_thread(read_json, _saved_path(Path(handle.data["log"])))
        if saved is not None and saved.get("describe"):
            return dict(saved["describe"])
        try:
            pod = await request(self._core.read_namespaced_pod(name, self.namespace, **call_options()))
        except KubernetesApiError as exc:
            if exc.status != 404:
                raise
            return {"executor": self.name, "namespace": self.namespace, "pod": name, "state": "gone"}
        return self._describe_pod(pod, name)

    def _describe_pod(self, pod: dict[str, Any], name: str) -> dict[str, Any]:
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        main = next((c for c in spec.get("containers") or [] if c.get("name") == MAIN_CONTAINER), {})
        argv = list(main.get("command") or [])[5:]  # after: busybox sh -c WRAPPER aihub
        return {
            "executor": self.name,
            "namespace": self.namespace,
            "pod": name,
            "node": spec.get("nodeName") or "",
            "host_ip": status.get("hostIP") or "",
            "pod_ip": status.get("podIP") or "",
            "phase": status.get("phase") or "Pending",
            "image": main.get("image", ""),
            "argv": argv,
            "env": sorted(e["name"] for e in main.get("env") or [] if not e["name"].startswith("_AIHUB_")),
            "resources": main.get("resources") or {},
            "node_selector": spec.get("nodeSelector") or {},
            "state": _state_text(pod, name in self._stopping),
            "init": _container_text(_container_status(pod, INIT_CONTAINER, init=True)),
            "conditions": [
                f"{c.get('type')}={c.get('status')}"
                + (f" ({c['reason']}: {c.get('message', '')})" if c.get("reason") else "")
                for c in status.get("conditions") or []
            ],
            "created_at": (pod.get("metadata") or {}).get("creationTimestamp"),
            "started_at": status.get("startTime"),
        }

    async def events(self, handle: Handle) -> list[dict[str, Any]]:
        """The pod's Kubernetes events, oldest first (kept with the report once the attempt ended)."""
        if handle.data.get("error"):
            return []
        saved = await asyncio.to_thread(read_json, _saved_path(Path(handle.data["log"])))
        if saved is not None:
            return list(saved.get("events") or [])
        await self.probe()
        return await self._pod_events(handle.id)

    async def _pod_events(self, name: str) -> list[dict[str, Any]]:
        """The events the API server has now, plus those the event watch kept after they expired there."""
        merged = dict(self._events.get(name, {}))
        selector = f"involvedObject.kind=Pod,involvedObject.name={name}"
        try:
            listing = await request(
                self._core.list_namespaced_event(self.namespace, field_selector=selector, **call_options())
            )
        except (KubernetesApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("kubernetes executor: listing events of %s failed: %s", name, exc)
            listing = {}
        for item in listing.get("items") or []:
            merged[_event_key(item)] = _event_json(item)
        return sorted(merged.values(), key=lambda e: e["time"] or "")

    # --------------------------------------------------------------------------------------- watches
    async def _watch_pods(self) -> None:
        await self._list_and_watch(
            self._core.list_namespaced_pod, self._on_pod_list, self._on_pod_event, label_selector=LABEL_RUN
        )

    async def _watch_events(self) -> None:
        await self._list_and_watch(
            self._core.list_namespaced_event,
            self._on_event_list,
            self._on_event_event,
            field_selector="involvedObject.kind=Pod",
        )

    async def _list_and_watch(
        self,
        lister: Callable[..., Any],
        on_list: Callable[[list[dict[str, Any]]], None],
        on_event: Callable[[str, dict[str, Any]], None],
        **selector: str,
    ) -> None:
        """List, then watch from the list's version; resume where a watch ended; re-list after 410 Gone."""
        failures = 0
        while True:
            try:
                listing = await request(lister(self.namespace, **selector, **call_options()))
                on_list(listing.get("items") or [])
                version = (listing.get("metadata") or {}).get("resourceVersion")
                while True:
                    version = await self._watch_once(lister, on_event, version, selector)
                    failures = 0
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status == 410:
                    log.info("kubernetes executor: watch expired (%s); listing again", exc.reason)
                    continue
                failures += 1
                log.warning("kubernetes executor: watch failed: %s", exc)
            except Exception as exc:  # a watch must outlive anything the server or the network does
                failures += 1
                log.warning("kubernetes executor: list/watch failed: %s", exc)
            await asyncio.sleep(min(30.0, 0.5 * 2 ** min(failures, 6)))

    async def _watch_once(
        self,
        lister: Callable[..., Any],
        on_event: Callable[[str, dict[str, Any]], None],
        version: str | None,
        selector: dict[str, str],
    ) -> str | None:
        """One watch request until the server ends it; returns the last resourceVersion seen."""
        stream = watch.Watch(return_type="object")
        try:
            async for event in stream.stream(
                lister,
                self.namespace,
                resource_version=version,
                timeout_seconds=self.watch_timeout,
                allow_watch_bookmarks=True,
                _request_timeout=aiohttp.ClientTimeout(
                    sock_connect=API_TIMEOUT, sock_read=self.watch_timeout + API_TIMEOUT
                ),
                **selector,
            ):
                obj = event["raw_object"]
                if event["type"] != "BOOKMARK":
                    on_event(event["type"], obj)
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
        finally:
            await stream.close()
        return version

    def _on_pod_list(self, items: list[dict[str, Any]]) -> None:
        fresh = {pod["metadata"]["name"]: pod for pod in items}
        for name in set(self._pods) - set(fresh):  # deleted while no watch was open
            self._remember_gone(name, self._pods[name])
        self._pods = fresh
        self._pods_synced.set()
        for name in list(self._changes):
            self._notify(name)

    def _on_pod_event(self, kind: str, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        if kind == "DELETED":
            self._pods.pop(name, None)
            self._remember_gone(name, pod)
        elif kind in ("ADDED", "MODIFIED"):
            self._pods[name] = pod
            self._gone.pop(name, None)
        self._notify(name)

    def _remember_gone(self, name: str, pod: dict[str, Any]) -> None:
        """Keep the last state of a deleted pod for whoever waits for it (bounded: followers take theirs)."""
        self._gone[name] = pod
        self._gone.move_to_end(name)
        while len(self._gone) > _GONE_KEPT:
            self._gone.popitem(last=False)

    def _on_event_list(self, items: list[dict[str, Any]]) -> None:
        # merged, not replaced: events that expired on the server stay until the attempt's report has them
        for item in items:
            self._on_event_event("ADDED", item)

    def _on_event_event(self, kind: str, event: dict[str, Any]) -> None:
        pod = (event.get("involvedObject") or {}).get("name") or ""
        if not pod.startswith("aihub-"):
            return
        key = _event_key(event)
        if kind == "DELETED":  # events expire on the server; the attempt's copy stays in its report
            return
        per_pod = self._events.setdefault(pod, {})
        self._events.move_to_end(pod)
        per_pod[key] = _event_json(event)
        while len(per_pod) > _EVENTS_PER_POD:
            per_pod.pop(next(iter(per_pod)))
        while len(self._events) > _EVENT_PODS:
            self._events.popitem(last=False)


# ------------------------------------------------------------------------------------ upload (API side)


async def store_uploaded_output(
    upload: Path, kind: Literal["file", "dir"], artifacts: ArtifactStore
) -> tuple[str, int]:
    """Store a ``path`` output a pod uploaded (a tar.gz of a directory's contents, or of one file);
    returns (digest, size) of the stored archive. Raises :class:`ArtifactError` for a refused upload.

    The upload is unpacked safely and packed again with :func:`aihub.engine.artifacts.pack`, so the stored
    bytes are deterministic and equal to what the local executor stores for the same content.
    """
    if kind not in ("file", "dir"):
        raise ArtifactError(f"unknown output kind {kind!r}")
    work = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=".upload-", dir=upload.parent))
    try:
        archive = await asyncio.to_thread(_repack, upload, kind, work)
        return await artifacts.put_file(archive)
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)


def _repack(upload: Path, kind: str, work: Path) -> Path:
    root = work / "root"
    unpack(upload, root)
    source = root
    if kind == "file" and root.is_dir():
        entries = list(root.iterdir())
        if len(entries) != 1 or entries[0].is_symlink() or not entries[0].is_file():
            raise ArtifactError("the upload of a file output must hold exactly one regular file")
        source = entries[0]
    archive = work / "packed.tar.gz"
    pack(source, archive)
    return archive


def archive_kind(archive: Path) -> Literal["file", "dir"]:
    """Whether an archive made by :func:`aihub.engine.artifacts.pack` holds a file or a directory."""
    with tarfile.open(archive, "r|gz") as tar:
        tar.next()
        return "file" if tar.pax_headers.get(_ROOT_KIND_KEY) == "file" else "dir"


# ---------------------------------------------------------------------------------------------- helpers


def _failed_handle(key: JobKey, name: str, log_path: Path, message: str) -> Handle:
    """An attempt that could not become a pod still gets a handle; ``wait`` reports the message."""
    with contextlib.suppress(OSError), open(log_path, "a") as f:
        f.write(f"aihub: {message}\n")
    data = {
        "pod": name,
        "key": {"run_id": key.run_id, "node": key.node, "attempt": key.attempt},
        "log": str(log_path),
        "error": message,
    }
    return Handle("kubernetes", name, data)


def _handle_data(pod: dict[str, Any], log_path: Path) -> dict[str, Any]:
    annotations = _annotations(pod)
    return {
        "pod": pod["metadata"]["name"],
        "namespace": pod["metadata"].get("namespace"),
        "key": json.loads(annotations[ANNOTATION_KEY]),
        "mark": annotations[ANNOTATION_MARK],
        "outputs": json.loads(annotations.get(ANNOTATION_OUTPUTS) or "[]"),
        "max_text": int(annotations.get(ANNOTATION_MAX_TEXT) or 1000),
        "log": str(log_path),
    }


def _labels(pod: dict[str, Any]) -> dict[str, str]:
    return (pod.get("metadata") or {}).get("labels") or {}


def _annotations(pod: dict[str, Any]) -> dict[str, str]:
    return (pod.get("metadata") or {}).get("annotations") or {}


def _container_status(pod: dict[str, Any] | None, name: str, *, init: bool = False) -> dict[str, Any] | None:
    if pod is None:
        return None
    key = "initContainerStatuses" if init else "containerStatuses"
    return next((c for c in (pod.get("status") or {}).get(key) or [] if c.get("name") == name), None)


def _all_container_statuses(pod: dict[str, Any] | None) -> list[dict[str, Any]]:
    if pod is None:
        return []
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def _has_started(status: dict[str, Any] | None) -> bool:
    state = (status or {}).get("state") or {}
    return "running" in state or "terminated" in state


def _ended(pod: dict[str, Any] | None, gone: bool, stopping: bool) -> _End | None:
    """How the attempt ended, or None while it has not."""
    main = _container_status(pod, MAIN_CONTAINER)
    terminated = ((main or {}).get("state") or {}).get("terminated")
    if terminated is not None:
        code = int(terminated.get("exitCode", 1))
        error = None
        if terminated.get("reason") == "OOMKilled":
            error = f"exited with code {code}: killed for using more memory than its limit (OOMKilled)"
        return _End(code, error, _time(terminated.get("startedAt")), _time(terminated.get("finishedAt")))
    if gone:
        if stopping:
            return _End(None)
        return _End(None, "the pod was deleted before its command ended")
    status = (pod or {}).get("status") or {}
    if status.get("phase") == "Failed":
        for init in status.get("initContainerStatuses") or []:
            term = (init.get("state") or {}).get("terminated") or {}
            if term and term.get("exitCode", 0) != 0:
                return _End(None, f"init container {init.get('name')} failed: {_container_text(init)}")
        reason = ": ".join(p for p in (status.get("reason"), status.get("message")) if p)
        return _End(None, f"the pod failed: {reason or 'no reason given'}")
    if status.get("phase") == "Succeeded":
        return _End(None, "the pod succeeded but its main container reported no exit status")
    return None


def _state_text(pod: dict[str, Any], stopping: bool) -> str:
    main = _container_status(pod, MAIN_CONTAINER)
    if main is None:
        status = pod.get("status") or {}
        for cond in status.get("conditions") or []:
            if cond.get("status") == "False" and cond.get("reason"):
                return f"pending: {cond['reason']}: {cond.get('message', '')}".rstrip(": ")
        return f"pending ({status.get('phase') or 'Pending'})"
    text = _container_text(main)
    deleting = (pod.get("metadata") or {}).get("deletionTimestamp")
    if stopping or deleting:
        text += " (stopping)" if "running" in (main.get("state") or {}) else " (stopped)"
    return text


def _container_text(status: dict[str, Any] | None) -> str:
    state = (status or {}).get("state") or {}
    if "running" in state:
        return f"running since {state['running'].get('startedAt', '?')}"
    if "terminated" in state:
        term = state["terminated"]
        return f"exited with code {term.get('exitCode')} ({term.get('reason') or 'no reason'})"
    if "waiting" in state:
        waiting = state["waiting"]
        return f"waiting: {waiting.get('reason', '')}: {waiting.get('message', '')}".rstrip(": ")
    return "not started"


def _event_key(event: dict[str, Any]) -> str:
    meta = event.get("metadata") or {}
    return str(meta.get("uid") or meta.get("name") or "")


def _event_json(event: dict[str, Any]) -> dict[str, Any]:
    source = event.get("source") or {}
    return {
        "time": event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or (event.get("metadata") or {}).get("creationTimestamp"),
        "type": event.get("type") or "Normal",
        "reason": event.get("reason") or "",
        "message": event.get("message") or "",
        "count": event.get("count") or 1,
        "source": source.get("component") or event.get("reportingComponent") or "",
        "object": (event.get("involvedObject") or {}).get("fieldPath") or "",
    }


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _text_value(decl: OutputDecl, problem: list[str] | None, chunks: list[str], max_text: int) -> str:
    """The value of a text output from the wrapper's report, by the same rules as every executor
    (:func:`aihub.engine.outputs.read_text_output` reads it from a file shaped like the node's)."""
    with tempfile.TemporaryDirectory(prefix="aihub-text-") as work:
        host = Path(work) / "value"
        if problem and problem[0] == "notfile":
            host.mkdir()
        elif problem and problem[0] == "toolarge":
            with open(host, "wb") as f:  # sparse: only its size matters
                f.truncate(int(problem[1]) if len(problem) > 1 and problem[1].isdigit() else 1 << 30)
        elif problem is None:
            try:
                host.write_bytes(base64.b64decode("".join(chunks), validate=True))
            except ValueError as exc:
                raise OutputError(f"output '{decl.name}': the reported value is garbled") from exc
        return read_text_output(decl, host, max_text)


def _path_problem(decl: OutputDecl, problem: list[str]) -> str:
    what = problem[0] if problem else ""
    if what == "missing":
        return f"output '{decl.name}': path {decl.path} does not exist"
    if what == "pack":
        return f"output '{decl.name}': cannot pack {decl.path} (see the log)"
    if what == "upload":
        return f"output '{decl.name}': the upload to the platform failed (see the log)"
    return f"output '{decl.name}': {' '.join(problem) or 'failed'}"


def _saved_path(log_path: Path) -> Path:
    return log_path.with_suffix(".pod.json")


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


async def _append_line(path: Path, line: str) -> None:
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
