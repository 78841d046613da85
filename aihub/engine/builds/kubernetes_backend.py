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
3. copies the logs of the build pod's containers (``clone``, then ``kaniko``) into the build log;
4. on success returns the image's ``ENTRYPOINT`` and ``WORKDIR`` from the Dockerfile (the Kubernetes executor
   runs module nodes with that image and argv); on failure raises :class:`BuildFailure` with the failed
   container's termination message/reason (or the Job's condition) and the last log lines;
5. deletes the Job with ``propagationPolicy: Background`` (its pod goes with it), whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from aihub.engine.builds.backend import BuiltImage
from aihub.engine.builds.dockerfile import DockerfileInfo
from aihub.engine.builds.kubernetes import KanikoOptions, kaniko_job
from aihub.engine.builds.local import BuildFailure
from aihub.engine.executors.kubernetes import KubernetesApiError, _call, _request, load_configuration
from aihub.settings import Settings

if TYPE_CHECKING:
    from aihub.engine.builds.manager import BuildJob

__all__ = ["KubernetesBuildBackend"]

log = logging.getLogger("aihub.builds")

_API_TIMEOUT = 30.0
_CONTAINERS = ("clone", "kaniko")  # the build pod's containers, in the order they run
_LOG_LIMIT = 4 * 1024 * 1024  # bytes of each container's log copied into the build log
_TAIL = 15  # log lines quoted in a failure's message


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
    ) -> None:
        self.options = options
        self.timeout = timeout
        self.watch_timeout = watch_timeout
        self._configuration = configuration
        self._in_cluster = in_cluster
        self._kubeconfig = kubeconfig
        self._context = context
        self._api: client.ApiClient | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesBuildBackend:
        """As configured: the executor's cluster settings, plus ``kubernetes_build_*`` fields when they exist
        in :class:`Settings` (Kaniko image, push secret, insecure registry, timeout)."""
        options: dict[str, Any] = {
            "namespace": settings.kubernetes_namespace,
            "allow_file_git": settings.allow_file_git,
        }
        for field in ("kaniko_image", "git_image", "registry_secret", "insecure_registry", "cpu", "memory"):
            value = getattr(settings, f"kubernetes_build_{field}", None)
            if value is not None:
                options[field] = value
        timeout = getattr(settings, "kubernetes_build_timeout", None) or 3600.0
        options["deadline_seconds"] = int(timeout)
        return cls(
            KanikoOptions(**options),
            in_cluster=settings.kubernetes_in_cluster,
            kubeconfig=getattr(settings, "kubernetes_kubeconfig", None),
            context=getattr(settings, "kubernetes_context", None),
            timeout=float(timeout),
        )

    # ------------------------------------------------------------------------------------- client
    async def _client(self) -> client.ApiClient:
        async with self._lock:
            if self._api is None:
                cfg = self._configuration or await load_configuration(
                    in_cluster=self._in_cluster, kubeconfig=self._kubeconfig, context=self._context
                )
                self._api = client.ApiClient(cfg)
            return self._api

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

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
            api = await self._client()
        except Exception as exc:
            raise BuildFailure(
                f"the Kubernetes build backend cannot load its cluster configuration: {exc}"
            ) from exc
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        created = False
        try:
            created_job = await self._create(batch, manifest, log)
            created = True
            log(f"build Job {ns}/{name} created: Kaniko pushes {image}")
            try:
                async with asyncio.timeout(self.timeout):
                    final = await self._follow(batch, name, log)
            except TimeoutError:
                await self._copy_logs(core, created_job, log)
                raise BuildFailure(
                    f"the build Job {name} did not finish within {self.timeout:g} seconds"
                ) from None
            pod, tail = await self._copy_logs(core, created_job, log)
            condition = _finished(final)
            if condition == "Complete":
                digest = _termination_message(pod, "kaniko")
                log(f"image pushed: {image}" + (f" ({digest})" if digest else ""))
                return BuiltImage(entrypoint=tuple(info.entrypoint), workdir=info.workdir)
            raise BuildFailure(_failure_message(name, final, pod, tail))
        except (KubernetesApiError, ApiException, aiohttp.ClientError, OSError) as exc:
            raise BuildFailure(f"the Kubernetes API refused or failed the build Job {name}: {exc}") from exc
        finally:
            if created:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._delete(batch, name, log))

    async def _create(
        self, batch: client.BatchV1Api, manifest: dict[str, Any], log: Callable[[str], None]
    ) -> dict[str, Any]:
        ns, name = self.options.namespace, manifest["metadata"]["name"]
        try:
            return await _request(batch.create_namespaced_job(ns, manifest, **_call()))
        except KubernetesApiError as exc:
            if exc.status != 409:
                raise
        log(f"a Job {name} of an interrupted attempt exists; deleting it and starting again")
        await self._delete(batch, name, log)
        return await _request(batch.create_namespaced_job(ns, manifest, **_call()))

    async def _delete(self, batch: client.BatchV1Api, name: str, log: Callable[[str], None]) -> None:
        try:
            await _request(
                batch.delete_namespaced_job(
                    name, self.options.namespace, propagation_policy="Background", **_call()
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
        """The Job once it is Complete or Failed: list + watch, resumed after an end, re-listed after 410."""
        selector = {"field_selector": f"metadata.name={name}"}
        while True:
            listing = await _request(batch.list_namespaced_job(self.options.namespace, **selector, **_call()))
            items = listing.get("items") or []
            if not items:
                raise BuildFailure(f"the build Job {name} disappeared before it finished")
            if _finished(items[0]):
                return items[0]  # type: ignore[no-any-return]
            version = (listing.get("metadata") or {}).get("resourceVersion")
            try:
                while True:
                    version, final = await self._watch_once(batch, name, version, selector)
                    if final is not None:
                        return final
            except ApiException as exc:
                if exc.status != 410:
                    raise
                log("the Job watch expired; listing the Job again")

    async def _watch_once(
        self, batch: client.BatchV1Api, name: str, version: str | None, selector: dict[str, str]
    ) -> tuple[str | None, dict[str, Any] | None]:
        stream = watch.Watch(return_type="object")
        try:
            async for event in stream.stream(
                batch.list_namespaced_job,
                self.options.namespace,
                resource_version=version,
                timeout_seconds=self.watch_timeout,
                allow_watch_bookmarks=True,
                _request_timeout=aiohttp.ClientTimeout(
                    sock_connect=_API_TIMEOUT, sock_read=self.watch_timeout + _API_TIMEOUT
                ),
                **selector,
            ):
                obj = event["raw_object"]
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if event["type"] == "DELETED":
                    raise BuildFailure(f"the build Job {name} was deleted before it finished")
                if event["type"] != "BOOKMARK" and _finished(obj):
                    return version, obj
        finally:
            await stream.close()
        return version, None

    async def _copy_logs(
        self, core: client.CoreV1Api, job: dict[str, Any], log: Callable[[str], None]
    ) -> tuple[dict[str, Any] | None, list[str]]:
        """Copy the build pod's container logs into the build log; the pod (None if there is none) and the
        last lines."""
        try:
            return await self._copy_pod_logs(core, job, log)
        except (KubernetesApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            log(f"could not read the build pod's logs: {exc}")
            return None, []

    async def _copy_pod_logs(
        self, core: client.CoreV1Api, job: dict[str, Any], log: Callable[[str], None]
    ) -> tuple[dict[str, Any] | None, list[str]]:
        uid = job["metadata"].get("uid", "")
        tail: list[str] = []
        listing = await _request(
            core.list_namespaced_pod(
                self.options.namespace, label_selector=f"controller-uid={uid}", **_call()
            )
        )
        pods = sorted(listing.get("items") or [], key=lambda p: p["metadata"].get("creationTimestamp") or "")
        if not pods:
            log("the build Job started no pod")
            return None, tail
        pod = pods[-1]
        pod_name = pod["metadata"]["name"]
        for container in _CONTAINERS:
            if _container_status(pod, container) is None:
                continue
            try:
                text = await self._read_log(core, pod_name, container)
            except KubernetesApiError as exc:
                log(f"[{container}] log unavailable: {exc}")
                continue
            lines = text.splitlines()
            for line in lines:
                log(f"[{container}] {line}")
            tail = [*tail, *(f"[{container}] {line}" for line in lines)][-_TAIL:]
        return pod, tail

    async def _read_log(self, core: client.CoreV1Api, pod: str, container: str) -> str:
        resp = await core.read_namespaced_pod_log(
            pod, self.options.namespace, container=container, limit_bytes=_LOG_LIMIT, **_call()
        )
        try:
            body = await resp.read()
        finally:
            resp.release()
        if not 200 <= resp.status < 300:
            raise KubernetesApiError.from_body(resp.status, body)
        return body.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------- helpers


def _finished(job: dict[str, Any]) -> str | None:
    """``Complete`` or ``Failed`` once the Job has that condition, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return condition["type"]  # type: ignore[no-any-return]
    return None


def _container_status(pod: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    status = (pod or {}).get("status") or {}
    for item in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        if item.get("name") == name:
            return item  # type: ignore[no-any-return]
    return None


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
