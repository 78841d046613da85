"""The Kubernetes build backend: the module's image built and pushed by a Kaniko Job on the cluster.

Used by the :class:`~aihub.engine.builds.manager.BuildManager` when ``executor = "kubernetes"``. The manager
clones the module and checks the Dockerfile/README exactly as for the local backend; then
:meth:`KubernetesBuildBackend.produce`:

1. creates the Job of :func:`~aihub.engine.builds.kubernetes.kaniko_job` (``batch/v1``, name
   ``aihub-build-<build id>``) that clones the checked commit and pushes ``<registry>/<category>/<name>:<sha>``;
   a Job left by an interrupted attempt of the same build is deleted and created again;
2. follows the Job until its ``Complete`` or ``Failed`` condition: list, then watch from the list's
   ``resourceVersion``; a watch the server ends is resumed from the last version seen, an expired one (410
   Gone) is replaced by a fresh list (:func:`~aihub.engine.executors.k8s_watch.watch_until`); the whole build
   is bounded by ``timeout`` seconds;
3. meanwhile streams the logs of the build pod's containers (``clone``, then ``kaniko``), each once it runs,
   into the build log as their lines arrive, and reads what a stream missed once the Job has finished
   (:class:`~aihub.engine.builds.kubernetes_logs.BuildLogs`, which the streams get ``log_drain`` seconds to
   complete);
4. on success returns the image's ``ENTRYPOINT`` and ``WORKDIR`` from the Dockerfile (the Kubernetes executor
   runs module nodes with that image and argv); on failure raises :class:`BuildFailure` with the failed
   container's termination message/reason (or the Job's condition) and the last log lines;
5. deletes the Job with ``propagationPolicy: Background`` (its pod goes with it), whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from aihub.engine.builds.backend import BuiltImage
from aihub.engine.builds.dockerfile import DockerfileInfo
from aihub.engine.builds.kubernetes import KanikoOptions, kaniko_job
from aihub.engine.builds.kubernetes_logs import CONTAINERS, BuildLogs, container_status, stop
from aihub.engine.builds.local import BuildFailure
from aihub.engine.executors.k8s_client import Cluster, KubernetesApiError, call_options, request
from aihub.engine.executors.k8s_watch import Check, watch_until
from aihub.settings import Settings

if TYPE_CHECKING:
    from aihub.engine.builds.manager import BuildJob

__all__ = ["KubernetesBuildBackend"]


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
        api = await self._api()
        return await self._run(client.BatchV1Api(api), client.CoreV1Api(api), manifest, image, info, log)

    async def _api(self) -> client.ApiClient:
        try:
            return await self._cluster.api()
        except Exception as exc:
            raise BuildFailure(
                f"the Kubernetes build backend cannot load its cluster configuration: {exc}"
            ) from exc

    async def _run(
        self,
        batch: client.BatchV1Api,
        core: client.CoreV1Api,
        manifest: dict[str, Any],
        image: str,
        info: DockerfileInfo,
        log: Callable[[str], None],
    ) -> BuiltImage:
        """Create the Job, follow it and its logs to the end, delete it whatever happened."""
        name = manifest["metadata"]["name"]
        streams: asyncio.Task[None] | None = None
        created = False
        try:
            uid = (await self._create(batch, manifest, log))["metadata"].get("uid", "")
            created = True
            log(f"build Job {self.options.namespace}/{name} created: Kaniko pushes {image}")
            logs = BuildLogs(core, self.options.namespace, uid, log, **self._log_options)
            streams = asyncio.create_task(logs.stream(), name=f"{name} logs")
            return await self._outcome(batch, name, image, info, logs, streams, log)
        except (KubernetesApiError, ApiException, aiohttp.ClientError, OSError) as exc:
            raise BuildFailure(f"the Kubernetes API refused or failed the build Job {name}: {exc}") from exc
        finally:
            if streams is not None:
                await stop(streams)  # closes the log streams, also when the build is cancelled
            if created:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._delete(batch, name, log))

    async def _outcome(
        self,
        batch: client.BatchV1Api,
        name: str,
        image: str,
        info: DockerfileInfo,
        logs: BuildLogs,
        streams: asyncio.Task[None],
        log: Callable[[str], None],
    ) -> BuiltImage:
        """The built image once the Job is Complete; :class:`BuildFailure` when it failed or took too long."""
        try:
            async with asyncio.timeout(self.timeout):
                final = await self._follow(batch, name, log)
        except TimeoutError:
            await logs.finish(streams, drain=0)
            raise BuildFailure(
                f"the build Job {name} did not finish within {self.timeout:g} seconds"
            ) from None
        pod = await logs.finish(streams, drain=self.log_drain)
        if _finished(final) == "Complete":
            digest = _termination_message(pod, "kaniko")
            log(f"image pushed: {image}" + (f" ({digest})" if digest else ""))
            return BuiltImage(entrypoint=tuple(info.entrypoint), workdir=info.workdir)
        raise BuildFailure(_failure_message(name, final, pod, logs.tail()))

    @property
    def _log_options(self) -> dict[str, Any]:
        return {"watch_timeout": self.watch_timeout, "eof_grace": self.eof_grace, "log_retry": self.log_retry}

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

        def expired() -> None:
            log("the Job watch expired; listing the Job again")

        selector = {"field_selector": f"metadata.name={name}"}
        return await watch_until(
            batch.list_namespaced_job,
            self.options.namespace,
            selector,
            _job_end(name),
            watch_timeout=self.watch_timeout,
            expired=expired,
        )


# ---------------------------------------------------------------------------------------------- helpers


def _job_end(name: str) -> Check[dict[str, Any]]:
    """The Job once it has finished; a Job gone before that fails the build."""

    def check(job: dict[str, Any] | None, event: str) -> dict[str, Any] | None:
        if job is None:
            raise BuildFailure(f"the build Job {name} disappeared before it finished")
        if event == "DELETED":
            raise BuildFailure(f"the build Job {name} was deleted before it finished")
        return job if _finished(job) else None

    return check


def _finished(job: dict[str, Any]) -> str | None:
    """``Complete`` or ``Failed`` once the Job has that condition, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return condition["type"]  # type: ignore[no-any-return]
    return None


def _termination_message(pod: dict[str, Any] | None, container: str) -> str:
    state = (container_status(pod, container) or {}).get("state") or {}
    return str((state.get("terminated") or {}).get("message") or "").strip()


def _failure_message(name: str, job: dict[str, Any], pod: dict[str, Any] | None, tail: list[str]) -> str:
    reasons = []
    for container in CONTAINERS:
        state = ((container_status(pod, container) or {}).get("state") or {}).get("terminated") or {}
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
