"""The Kubernetes build backend: the module's image built and pushed by a Kaniko Job on the cluster.

Used by the :class:`~aihub.engine.builds.manager.BuildManager` when ``executor = "kubernetes"``. The manager
clones the module and checks the Dockerfile/README exactly as for the local backend; then
:meth:`KubernetesBuildBackend.produce`:

1. creates the Job of :func:`~aihub.engine.builds.kubernetes.kaniko_job` (``batch/v1``, name
   ``aihub-build-<build id>``) that clones the checked commit and pushes ``<registry>/<category>/<name>:<sha>``;
   a Job left by an interrupted attempt of the same build is deleted and created again;
2. follows the Job until its ``Complete`` or ``Failed`` condition: list, then watch from the list's
   ``resourceVersion``; a watch the server ends is resumed from the last version seen, an expired one (410
   Gone) is replaced by a fresh list; the whole build is bounded by ``timeout`` seconds;
3. meanwhile streams the logs of the build pod's containers (``clone``, then ``kaniko``), each once it runs,
   into the build log as their lines arrive (``follow``, as the Kubernetes executor follows a node's log;
   the pod's state comes from a list + watch of its own). Every read starts at the log's beginning and skips
   the lines the build log holds already, so a stream the kubelet closed early or that broke is simply
   followed again (a break is written to the build log; after ``_STREAM_BREAKS`` unproductive breaks in a
   row the container is left to the end). When the Job has finished the streams get ``log_drain`` seconds to
   reach their ends; a log still incomplete then (or never streamed) is read once, as far as it goes. Each
   container's log is copied up to ``_LOG_LIMIT`` bytes; no line is written twice;
4. on success returns the image's ``ENTRYPOINT`` and ``WORKDIR`` from the Dockerfile (the Kubernetes executor
   runs module nodes with that image and argv); on failure raises :class:`BuildFailure` with the failed
   container's termination message/reason (or the Job's condition) and the last log lines;
5. deletes the Job with ``propagationPolicy: Background`` (its pod goes with it), whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from aihub.engine.builds.backend import BuiltImage
from aihub.engine.builds.dockerfile import DockerfileInfo
from aihub.engine.builds.kubernetes import KanikoOptions, kaniko_job
from aihub.engine.builds.local import BuildFailure
from aihub.engine.executors.k8s_client import API_TIMEOUT, Cluster, KubernetesApiError, call_options, request
from aihub.engine.executors.k8s_status import all_container_statuses, has_started
from aihub.settings import Settings

if TYPE_CHECKING:
    from aihub.engine.builds.manager import BuildJob

__all__ = ["KubernetesBuildBackend"]

logger = logging.getLogger("aihub.builds")

_T = TypeVar("_T")
Check = Callable[[dict[str, Any] | None, str], _T | None]

_CONTAINERS = ("clone", "kaniko")  # the build pod's containers, in the order they run
_LOG_LIMIT = 4 * 1024 * 1024  # bytes of each container's log copied into the build log
_CHUNK = 64 * 1024
_TAIL = 15  # log lines quoted in a failure's message
_STREAM_BREAKS = 5  # unproductive breaks in a row after which a container's log is left to the build's end
_STEADY = 30.0  # a stream that lasted this long before it broke was no failure to connect
_STREAM_ERRORS = (KubernetesApiError, aiohttp.ClientError, OSError, TimeoutError)


class KubernetesBuildBackend:
    """Builds module images with Kaniko Jobs in ``options.namespace`` (see the module docstring)."""

    name = "kubernetes"

    def __init__(
        self,
        options: KanikoOptions,
        *,
        configuration: client.Configuration | None = None,
        in_cluster: bool = False,
        kubeconfig: str | None = None,
        context: str | None = None,
        timeout: float = 3600.0,
        watch_timeout: int = 300,
        log_drain: float = 15.0,
        eof_grace: float = 5.0,
        log_retry: float = 2.0,
    ) -> None:
        self.options = options
        self.timeout = timeout
        self.watch_timeout = watch_timeout
        self.log_drain = log_drain  # how long the log streams may take to end once the Job has finished
        self.eof_grace = eof_grace  # how long a log stream's end may precede the container's in its status
        self.log_retry = log_retry  # seconds before a broken log stream is followed again
        self._cluster = Cluster(configuration, in_cluster=in_cluster, kubeconfig=kubeconfig, context=context)

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesBuildBackend:
        """As configured: the executor's cluster settings, plus ``kubernetes_build_*`` fields when they exist
        in :class:`Settings` (Kaniko image, push secret, insecure registry, timeout)."""
        options: dict[str, Any] = {
            "namespace": settings.kubernetes_namespace,
            "allow_file_git": settings.allow_file_git,
        }
        for option in ("kaniko_image", "git_image", "registry_secret", "insecure_registry", "cpu", "memory"):
            value = getattr(settings, f"kubernetes_build_{option}", None)
            if value is not None:
                options[option] = value
        timeout = getattr(settings, "kubernetes_build_timeout", None) or 3600.0
        options["deadline_seconds"] = int(timeout)
        return cls(
            KanikoOptions(**options),
            in_cluster=settings.kubernetes_in_cluster,
            kubeconfig=getattr(settings, "kubernetes_kubeconfig", None),
            context=getattr(settings, "kubernetes_context", None),
            timeout=float(timeout),
        )

    async def close(self) -> None:
        await self._cluster.close()

    # ------------------------------------------------------------------------------------- a build
    async def produce(
        self,
        job: BuildJob,
        *,
        sha: str,
        image: str,
        info: DockerfileInfo,
        context: Path,
        log: Callable[[str], None],
    ) -> BuiltImage:
        manifest = kaniko_job(
            build_id=job.build_id,
            module=job.module,
            image=image,
            git_url=job.git_url,
            ref=job.ref,
            commit_sha=sha,
            dockerfile_path=job.dockerfile_path,
            build_context=job.build_context,
            options=self.options,
        )
        name = manifest["metadata"]["name"]
        ns = self.options.namespace
        try:
            api = await self._cluster.api()
        except Exception as exc:
            raise BuildFailure(
                f"the Kubernetes build backend cannot load its cluster configuration: {exc}"
            ) from exc
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        logs = [_ContainerLog(container, log) for container in _CONTAINERS]
        streams: asyncio.Task[None] | None = None
        created = False
        try:
            created_job = await self._create(batch, manifest, log)
            created = True
            log(f"build Job {ns}/{name} created: Kaniko pushes {image}")
            uid = created_job["metadata"].get("uid", "")
            streams = asyncio.create_task(self._stream_logs(core, uid, logs, log), name=f"{name} logs")
            try:
                async with asyncio.timeout(self.timeout):
                    final = await self._follow(batch, name, log)
            except TimeoutError:
                await self._finish_logs(core, uid, streams, logs, log, drain=0)
                raise BuildFailure(
                    f"the build Job {name} did not finish within {self.timeout:g} seconds"
                ) from None
            pod = await self._finish_logs(core, uid, streams, logs, log, drain=self.log_drain)
            condition = _finished(final)
            if condition == "Complete":
                digest = _termination_message(pod, "kaniko")
                log(f"image pushed: {image}" + (f" ({digest})" if digest else ""))
                return BuiltImage(entrypoint=tuple(info.entrypoint), workdir=info.workdir)
            raise BuildFailure(_failure_message(name, final, pod, _tail(logs)))
        except (KubernetesApiError, ApiException, aiohttp.ClientError, OSError) as exc:
            raise BuildFailure(f"the Kubernetes API refused or failed the build Job {name}: {exc}") from exc
        finally:
            if streams is not None:
                await _stop(streams)  # closes the log streams, also when the build is cancelled
            if created:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._delete(batch, name, log))

    async def _create(
        self, batch: client.BatchV1Api, manifest: dict[str, Any], log: Callable[[str], None]
    ) -> dict[str, Any]:
        ns, name = self.options.namespace, manifest["metadata"]["name"]
        try:
            return await request(batch.create_namespaced_job(ns, manifest, **call_options()))
        except KubernetesApiError as exc:
            if exc.status != 409:
                raise
        log(f"a Job {name} of an interrupted attempt exists; deleting it and starting again")
        await self._delete(batch, name, log)
        return await request(batch.create_namespaced_job(ns, manifest, **call_options()))

    async def _delete(self, batch: client.BatchV1Api, name: str, log: Callable[[str], None]) -> None:
        try:
            await request(
                batch.delete_namespaced_job(
                    name, self.options.namespace, propagation_policy="Background", **call_options()
                )
            )
        except KubernetesApiError as exc:
            if exc.status != 404:
                log(f"could not delete the build Job {name}: {exc}")
                raise
        else:
            log(f"build Job {name} deleted")

    async def _follow(
        self, batch: client.BatchV1Api, name: str, log: Callable[[str], None]
    ) -> dict[str, Any]:
        """The Job once it is Complete or Failed."""
        selector = {"field_selector": f"metadata.name={name}"}
        return await self._until(batch.list_namespaced_job, selector, _job_end(name), "Job", log)

    async def _until(
        self,
        list_call: Callable[..., Any],
        selector: dict[str, str],
        check: Check[_T],
        what: str,
        log: Callable[[str], None],
    ) -> _T:
        """The first result of ``check(object, event type)``: on the newest listed object (None if there is
        none; type ``LISTED``), then on each watched change. List, then watch from the list's version; a watch
        the server ends is resumed from the last version seen, an expired one (410 Gone) listed again."""
        while True:
            listing = await request(list_call(self.options.namespace, **selector, **call_options()))
            result = check(_newest(listing.get("items") or []), "LISTED")
            if result is not None:
                return result
            version = (listing.get("metadata") or {}).get("resourceVersion")
            try:
                while True:
                    version, result = await self._watch_once(list_call, version, selector, check)
                    if result is not None:
                        return result
            except ApiException as exc:
                if exc.status != 410:
                    raise
                log(f"the {what} watch expired; listing the {what} again")

    async def _watch_once(
        self, list_call: Callable[..., Any], version: str | None, selector: dict[str, str], check: Check[_T]
    ) -> tuple[str | None, _T | None]:
        stream = watch.Watch(return_type="object")
        try:
            async for event in stream.stream(
                list_call,
                self.options.namespace,
                resource_version=version,
                timeout_seconds=self.watch_timeout,
                allow_watch_bookmarks=True,
                _request_timeout=aiohttp.ClientTimeout(
                    sock_connect=API_TIMEOUT, sock_read=self.watch_timeout + API_TIMEOUT
                ),
                **selector,
            ):
                obj = event["raw_object"]
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if event["type"] != "BOOKMARK" and (result := check(obj, event["type"])) is not None:
                    return version, result
        finally:
            await stream.close()
        return version, None

    # ------------------------------------------------------------------------------------- logs
    async def _stream_logs(
        self, core: client.CoreV1Api, uid: str, logs: list[_ContainerLog], log: Callable[[str], None]
    ) -> None:
        """Follow each container's log into the build log once it has started, in order (a task of
        :meth:`produce`, stopped by it)."""
        try:
            for container in logs:
                check = _container_started(container.name)
                pod = await self._until(core.list_namespaced_pod, _pod_selector(uid), check, "build pod", log)
                if has_started(_container_status(pod, container.name)):
                    await self._follow_log(core, uid, pod["metadata"]["name"], container)
        except (*_STREAM_ERRORS, ApiException) as exc:
            log(f"could not follow the build pod: {_describe(exc)}; its logs are copied when the build ends")
        except Exception as exc:  # a bug: the logs are still copied at the end
            logger.exception("following the build pod's logs failed")
            log(
                f"following the build pod's logs failed: {_describe(exc)}; they are copied when the build ends"
            )

    async def _follow_log(self, core: client.CoreV1Api, uid: str, pod: str, container: _ContainerLog) -> None:
        """Follow one container's log until it is complete; a stream that ended early or broke is followed
        again (see the module docstring)."""
        loop = asyncio.get_running_loop()
        breaks = 0
        while True:
            opened, lines = loop.time(), container.lines
            try:
                await self._read_log(core, pod, container, follow=True)
            except _STREAM_ERRORS as exc:
                logger.info("build log stream of %s/%s broke: %s", pod, container.name, exc)
                steady = container.lines > lines or loop.time() - opened >= _STEADY
                breaks = 1 if steady else breaks + 1
                if breaks >= _STREAM_BREAKS:
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
            if container.capped or await self._has_ended(core, uid, container.name):
                container.finish()
                return

    async def _has_ended(self, core: client.CoreV1Api, uid: str, container: str) -> bool:
        """Whether the container shows terminated (or its pod has ended or gone) within ``eof_grace``: a log
        stream's end precedes that status by a moment; a stream the kubelet closed early does not."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.eof_grace):
                check = _container_ended(container)
                return await self._until(
                    core.list_namespaced_pod, _pod_selector(uid), check, "build pod", _quiet
                )
        return False

    async def _finish_logs(
        self,
        core: client.CoreV1Api,
        uid: str,
        streams: asyncio.Task[None],
        logs: list[_ContainerLog],
        log: Callable[[str], None],
        *,
        drain: float,
    ) -> dict[str, Any] | None:
        """Let the log streams reach their ends (for at most ``drain`` seconds), stop them, then read once
        the logs they did not complete; the build pod (None if there is none)."""
        if drain > 0:
            await asyncio.wait({streams}, timeout=drain)
        await _stop(streams)
        try:
            listing = await request(
                core.list_namespaced_pod(self.options.namespace, **_pod_selector(uid), **call_options())
            )
        except (*_STREAM_ERRORS, ApiException) as exc:
            log(f"could not read the build pod's logs: {exc}")
            return None
        pod = _newest(listing.get("items") or [])
        if pod is None:
            log("the build Job started no pod")
            return None
        for container in logs:
            if container.complete or not has_started(_container_status(pod, container.name)):
                continue
            try:
                await self._read_log(core, pod["metadata"]["name"], container, follow=False)
            except _STREAM_ERRORS as exc:
                container.write(f"[{container.name}] log unavailable: {_describe(exc)}")
            else:
                container.finish()
        return pod

    async def _read_log(
        self, core: client.CoreV1Api, pod: str, container: _ContainerLog, *, follow: bool
    ) -> None:
        """Read the container's log from its start into the build log, skipping the lines it holds already;
        a follow lasts until the container ends (or the server ends the stream)."""
        container.restart()
        timeout = aiohttp.ClientTimeout(sock_connect=API_TIMEOUT) if follow else API_TIMEOUT
        resp = await core.read_namespaced_pod_log(
            pod,
            self.options.namespace,
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


# ---------------------------------------------------------------------------------------------- helpers


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel and await the log streams (their errors are logged by the task itself)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _quiet(line: str) -> None:
    """A log for checks whose expired watches are not worth a line in the build log."""


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _tail(logs: list[_ContainerLog]) -> list[str]:
    return [line for container in logs for line in container.tail][-_TAIL:]


def _pod_selector(uid: str) -> dict[str, str]:
    return {"label_selector": f"controller-uid={uid}"}


def _newest(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    items = sorted(items, key=lambda o: (o.get("metadata") or {}).get("creationTimestamp") or "")
    return items[-1] if items else None


def _job_end(name: str) -> Check[dict[str, Any]]:
    """The Job once it has finished; a Job gone before that fails the build."""

    def check(job: dict[str, Any] | None, event: str) -> dict[str, Any] | None:
        if job is None:
            raise BuildFailure(f"the build Job {name} disappeared before it finished")
        if event == "DELETED":
            raise BuildFailure(f"the build Job {name} was deleted before it finished")
        return job if _finished(job) else None

    return check


def _container_started(container: str) -> Check[dict[str, Any]]:
    """The pod once the container has started, or once it never will (the pod ended or went)."""

    def check(pod: dict[str, Any] | None, event: str) -> dict[str, Any] | None:
        if pod is None:
            return None  # not created yet
        if event == "DELETED" or _pod_over(pod) or has_started(_container_status(pod, container)):
            return pod
        return None

    return check


def _container_ended(container: str) -> Check[bool]:
    def check(pod: dict[str, Any] | None, event: str) -> bool | None:
        state = (_container_status(pod, container) or {}).get("state") or {}
        return True if pod is None or event == "DELETED" or _pod_over(pod) or "terminated" in state else None

    return check


def _pod_over(pod: dict[str, Any]) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return phase in ("Succeeded", "Failed") or bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def _finished(job: dict[str, Any]) -> str | None:
    """``Complete`` or ``Failed`` once the Job has that condition, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return condition["type"]  # type: ignore[no-any-return]
    return None


def _container_status(pod: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    """The status of the container (init or main) called ``name``."""
    return next((c for c in all_container_statuses(pod) if c.get("name") == name), None)


def _termination_message(pod: dict[str, Any] | None, container: str) -> str:
    state = (_container_status(pod, container) or {}).get("state") or {}
    return str((state.get("terminated") or {}).get("message") or "").strip()


def _failure_message(name: str, job: dict[str, Any], pod: dict[str, Any] | None, tail: list[str]) -> str:
    reasons = []
    for container in _CONTAINERS:
        state = ((_container_status(pod, container) or {}).get("state") or {}).get("terminated") or {}
        if state and state.get("exitCode", 0) != 0:
            what = "cloning the commit" if container == "clone" else "building or pushing the image"
            text = f"{what} failed (container {container} exited with {state.get('exitCode')}"
            text += f", {state['reason']})" if state.get("reason") else ")"
            if (state.get("message") or "").strip():
                text += f": {state['message'].strip()}"
            reasons.append(text)
            break
    if not reasons:
        for condition in (job.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Failed" and condition.get("status") == "True":
                reasons.append(
                    f"the build Job {name} failed: {condition.get('reason') or 'Failed'}"
                    + (f": {condition['message']}" if condition.get("message") else "")
                )
    message = reasons[0] if reasons else f"the build Job {name} failed"
    if tail:
        message += "\nlast log lines:\n" + "\n".join(tail)
    return message
