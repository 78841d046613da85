"""The Kubernetes executor: each attempt of a node is one pod (see :mod:`aihub.engine.executors.k8s_pod`).

How an attempt is followed:

- **One pod watch and one event watch for the whole executor** (:mod:`aihub.engine.executors.k8s_watch`):
  ``wait`` reads their cache and is woken by changes to its pod, so a thousand running attempts cost two
  HTTP streams, not a thousand.
- **Logs** are streamed from the main container as soon as it runs into the attempt's log in the platform's
  log store, so they outlive the pod (:mod:`aihub.engine.executors.k8s_logs`).
- **Outputs** arrive as marker lines the pod's wrapper writes after the node's command exits 0
  (:mod:`aihub.engine.executors.k8s_outputs`); marker lines are not archived.
- **The end** of an attempt is the main container's ``terminated`` state, or the pod's failure (an init
  container failed, eviction), or its disappearance. Image pull errors fail the attempt after a grace period;
  errors that never heal (an invalid image name) at once (:mod:`aihub.engine.executors.k8s_status`). The
  report, a description of the pod and its events are saved next to the log (``<attempt>.pod.json``) and the
  pod is deleted, so ``wait``, ``describe`` and ``events`` still answer after the pod and the server are gone.
- **Restart safety**: the handle is plain JSON and ``find`` re-attaches by labels (``aihub/run``,
  ``aihub/node``, ``aihub/attempt``; the ``aihub/key`` annotation tells look-alikes apart). Starting an
  attempt whose pod exists already (a restart between create and record) adopts that pod.
- **Stop** deletes the pod with ``gracePeriodSeconds``: the kubelet sends SIGTERM (the wrapper passes it to
  the node's command) and SIGKILL after the grace period; ``wait`` then reports ``stopped``.

The executor talks to the API server with ``kubernetes-asyncio`` (set up by
:mod:`aihub.engine.executors.k8s_client`) and keeps pods as plain JSON dicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
from pathlib import Path
from typing import Any, Literal

import aiohttp
from kubernetes_asyncio import client

from aihub.engine.executors.base import (
    ExitReport,
    Handle,
    Job,
    JobKey,
    SharedWaits,
    read_json,
    write_json,
)
from aihub.engine.executors.k8s_artifacts import input_kinds, presigned_urls, store_uploaded_output
from aihub.engine.executors.k8s_client import API_TIMEOUT, Cluster, KubernetesApiError, call_options, request
from aihub.engine.executors.k8s_logs import RETRY, Follower, PodLogs
from aihub.engine.executors.k8s_outputs import attempt_report
from aihub.engine.executors.k8s_pod import (
    ANNOTATION_KEY,
    ANNOTATION_MARK,
    ANNOTATION_MAX_TEXT,
    ANNOTATION_OUTPUTS,
    MAIN_CONTAINER,
    LaunchError,
    PodOptions,
    build_pod,
    key_annotation,
    key_selector,
    pod_name,
)
from aihub.engine.executors.k8s_status import End, container_status, describe_pod, ended, has_started, stuck
from aihub.engine.executors.k8s_watch import PodState, PodWatches
from aihub.settings import Settings
from aihub.storage.base import ArtifactStore, LogStore

__all__ = ["DEFAULT_HELPER_IMAGE", "KubernetesApiError", "KubernetesExecutor", "store_uploaded_output"]

log = logging.getLogger(__name__)

DEFAULT_HELPER_IMAGE = "busybox:1.36.1-musl"  # static busybox at /bin/busybox
DEFAULT_IMAGE = "python:3.11-slim"
_RESYNC = 60.0  # a follower re-reads its pod at least this often, whatever the watch says
_API_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)


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
        self.artifacts, self.logs, self.namespace = artifacts, logs, namespace
        self.presign_seconds = presign_seconds  # life of the presigned URLs handed to a pod
        self.max_upload_bytes = max_upload_bytes  # largest output a pod may put through its presigned URL
        self.options = PodOptions(namespace=namespace, helper_image=helper_image, default_image=default_image)
        self.keep_pods = keep_pods
        self.pull_grace = pull_grace
        self.stop_margin = stop_margin
        self._cluster = Cluster(configuration, in_cluster=in_cluster, kubeconfig=kubeconfig, context=context)
        self._core_api: client.CoreV1Api | None = None
        self._probe_lock = asyncio.Lock()
        self._waits = SharedWaits()
        self._stopping: set[str] = set()
        self._watches = PodWatches(namespace, watch_timeout)
        self._logs = PodLogs(self._watches, log_drain=log_drain, eof_grace=eof_grace)

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
            if self._core_api is None:
                self._core_api = await self._connect()
                self._watches.start(self._core_api)
        async with asyncio.timeout(API_TIMEOUT):
            await self._watches.synced.wait()

    async def _connect(self) -> client.CoreV1Api:
        api = await self._cluster.api()
        core = client.CoreV1Api(api)
        try:
            await request(core.list_namespaced_pod(self.namespace, limit=1, **call_options()))
        except (KubernetesApiError, *_API_ERRORS) as exc:
            await self._cluster.close()
            raise RuntimeError(
                f"Kubernetes executor: cannot list pods in namespace {self.namespace!r} "
                f"at {api.configuration.host}: {exc}"
            ) from exc
        return core

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
        await self._watches.stop()
        await self._cluster.close()
        self._core_api = None

    # ----------------------------------------------------------------------------------------- start
    async def start(self, job: Job) -> Handle:
        await self.probe()
        name = pod_name(job.key)
        log_path = self.logs.path(job.key.run_id, job.key.node, job.key.attempt)
        mark = f"::aihub-{secrets.token_hex(8)}::"
        try:
            kinds = await self._input_kinds(job)
            urls = await presigned_urls(self.artifacts, job, self.presign_seconds)
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

    async def _input_kinds(self, job: Job) -> dict[str, Literal["file", "dir"]]:
        return await input_kinds(self.artifacts, job)

    # ------------------------------------------------------------------------------------------ find
    async def find(self, key: JobKey) -> Handle | None:
        """The attempt's pod, by its labels (from the watch's cache, which is complete once probed), else
        the report saved when it ended; None when it never started."""
        await self.probe()
        return await self._find(key, ask_server=False)

    async def _find(self, key: JobKey, *, ask_server: bool) -> Handle | None:
        log_path = self.logs.path(key.run_id, key.node, key.attempt)
        if ask_server:
            selector = key_selector(key)
            listing = await request(
                self._core.list_namespaced_pod(self.namespace, label_selector=selector, **call_options())
            )
            pods = listing.get("items") or []
        else:
            pods = self._watches.labelled(dict(part.split("=", 1) for part in key_selector(key).split(",")))
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
        log_path = Path(handle.data["log"])
        if handle.data.get("error"):
            return ExitReport(exit_code=None, error=handle.data["error"])
        await self.probe()
        saved = await asyncio.to_thread(read_json, _saved_path(log_path))
        if saved is not None:  # ended before (maybe the pod outlived a crash right after the report)
            if not self.keep_pods:
                await self._delete_pod(handle.id, 0)
            return ExitReport.from_json(saved["report"])
        follower = Follower(handle, log_path)
        try:
            report = await self._follow(follower)
        finally:
            await self._logs.cancel(follower)
            self._watches.forget(handle.id)
            self._stopping.discard(handle.id)
        if not self.keep_pods:
            await self._delete_pod(handle.id, 0)
        return report

    async def _follow(self, follower: Follower) -> ExitReport:
        """Follow the attempt to its end; its report, saved with the pod's description and events."""
        end, (pod, gone) = await self._until_end(follower)
        follower.ended = True
        complete = await self._logs.drain(follower, pod, gone)
        stopped = follower.pod in self._stopping
        report = await attempt_report(
            end,
            follower,
            stopped=stopped,
            log_complete=complete,
            store=self.artifacts,
            max_upload=self.max_upload_bytes,
        )
        await self._save(follower, report, pod)
        return report

    async def _until_end(self, follower: Follower) -> tuple[End, PodState]:
        """How the attempt ended, and its pod's last state; its log is followed once the pod runs."""
        name = follower.pod
        while True:
            changed = self._watches.changed(name)
            pod, gone = await self._watches.pod_state(name)
            if not gone and has_started(container_status(pod, MAIN_CONTAINER)):
                self._logs.follow(follower)
            end = ended(pod, gone, name in self._stopping)
            if end is not None:
                return end, (pod, gone)
            now = asyncio.get_running_loop().time()
            delay = _RESYNC if pod is not None else RETRY
            end, delay = stuck(pod, follower.slow_since, now, self.pull_grace, delay)
            if end is not None:
                await self._delete_pod(name, 0)
                return end, (pod, gone)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await changed.wait()

    # ---------------------------------------------------------------------------------------- report
    async def _save(self, follower: Follower, report: ExitReport, pod: dict[str, Any] | None) -> None:
        name = follower.pod
        snapshot = {
            "handle": follower.handle.to_json(),
            "report": report.to_json(),
            "describe": self._describe_pod(pod, name) if pod is not None else None,
            "events": await self._watches.pod_events(name),
        }
        await asyncio.to_thread(write_json, _saved_path(follower.log_path), snapshot)
        self._watches.forget_events(name)

    # ------------------------------------------------------------------------------------------ stop
    async def stop(self, handle: Handle, grace: float) -> None:
        """Delete the pod with ``grace`` seconds of grace; returns once its command ended (or is gone)."""
        if handle.data.get("error"):
            return
        name = handle.id
        self._stopping.add(name)
        await self._delete_pod(name, max(0, math.ceil(grace)))
        await self._watches.until(name, _over, max(grace, 0) + self.stop_margin)

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
        except _API_ERRORS as exc:
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
        return describe_pod(pod, name, self.namespace, name in self._stopping)

    async def events(self, handle: Handle) -> list[dict[str, Any]]:
        """The pod's Kubernetes events, oldest first (kept with the report once the attempt ended)."""
        if handle.data.get("error"):
            return []
        saved = await asyncio.to_thread(read_json, _saved_path(Path(handle.data["log"])))
        if saved is not None:
            return list(saved.get("events") or [])
        await self.probe()
        return await self._watches.pod_events(handle.id)


# ---------------------------------------------------------------------------------------------- helpers


def _over(pod: dict[str, Any] | None, gone: bool) -> bool:
    """Whether a pod being stopped has ended (or is gone)."""
    return gone or ended(pod, gone, True) is not None


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


def _annotations(pod: dict[str, Any]) -> dict[str, str]:
    return (pod.get("metadata") or {}).get("annotations") or {}


def _saved_path(log_path: Path) -> Path:
    return log_path.with_suffix(".pod.json")
