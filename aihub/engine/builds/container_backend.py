"""The container build backend (``AIHUB_BUILDER=container``): a real image, built by this host's engine.

``podman build`` (or ``docker build``) of the checked-out commit, with the module's Dockerfile path and build
context — ``FROM``, ``RUN``, ``COPY`` and every other instruction for real — tagged with the image name the
manager chose (``REGISTRY/category/module:commit``). When ``AIHUB_REGISTRY`` is set the image is pushed there
(``AIHUB_REGISTRY_INSECURE=true`` for a plain-HTTP registry); otherwise it stays in the engine's local store,
where the container executor on the same host finds it. The engine's output goes line by line to the build's
log (the module's build page). The manager has checked the Dockerfile's exec-form ``ENTRYPOINT`` and the
absence of ``CMD`` before: the node runs that ``ENTRYPOINT`` with ``--name=value`` arguments.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aihub.engine.builds.backend import BuiltImage
from aihub.engine.builds.dockerfile import DockerfileInfo
from aihub.engine.builds.local import BuildFailure, inside
from aihub.engine.executors.container import find_engine_cli
from aihub.settings import Settings

if TYPE_CHECKING:
    from aihub.engine.builds.manager import BuildJob

__all__ = ["ContainerBuildBackend"]

DEFAULT_TIMEOUT = 3600.0


class ContainerBuildBackend:
    name = "container"

    def __init__(
        self,
        *,
        engine: str = "auto",
        push: bool = False,
        insecure_registry: bool = False,
        network: str = "host",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.engine_choice = engine
        self.push = push
        self.insecure_registry = insecure_registry
        self.network = network
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> ContainerBuildBackend:
        return cls(
            engine=settings.container_engine,
            push="registry" in settings.model_fields_set,  # AIHUB_REGISTRY given: push there
            insecure_registry=settings.registry_insecure,
            network=settings.container_network,
            timeout=settings.kubernetes_build_timeout or DEFAULT_TIMEOUT,
        )

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
        try:
            engine, cli = find_engine_cli(self.engine_choice)
        except RuntimeError as exc:
            raise BuildFailure(f"AIHUB_BUILDER=container: {exc}") from None
        dockerfile = inside(_repository_root(context, job.build_context), job.dockerfile_path)
        if dockerfile is None or not dockerfile.is_file():
            raise BuildFailure(f"the Dockerfile {job.dockerfile_path!r} is not a file of the repository")
        for note in info.notes:
            log(f"note: {note}")
        build = [cli, "build", "--network", self.network, "-f", str(dockerfile), "-t", image, str(context)]
        log(f"{engine} build -f {job.dockerfile_path} -t {image} {job.build_context}")
        await self._stream(build, log, f"{engine} build")
        if self.push:
            push = [cli, "push"]
            if self.insecure_registry and engine == "podman":
                push.append("--tls-verify=false")
            log(f"{engine} push {image}")
            await self._stream([*push, image], log, f"{engine} push")
        return BuiltImage(entrypoint=tuple(info.entrypoint), workdir=info.workdir)

    async def _stream(self, argv: list[str], log: Callable[[str], None], what: str) -> None:
        """Run ``argv``, each line of its output to the build log as it comes; BuildFailure when it fails."""
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert proc.stdout is not None
        last: list[str] = []
        try:
            async with asyncio.timeout(self.timeout):
                while line := await proc.stdout.readline():
                    text = line.decode(errors="replace").rstrip("\n")
                    log(text)
                    last = [*last[-4:], text]
                await proc.wait()
        except TimeoutError:
            raise BuildFailure(f"{what} did not finish within {self.timeout:g} s") from None
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            tail = " / ".join(t.strip() for t in last if t.strip())
            raise BuildFailure(f"{what} failed (exit code {proc.returncode}): {tail}")

    async def close(self) -> None:
        pass


def _repository_root(context: Path, build_context: str) -> Path:
    """The checkout's root: ``context`` is ``root/build_context`` (checked by the manager)."""
    depth = len([p for p in posixpath.normpath(build_context).split("/") if p not in ("", ".")])
    root = context
    for _ in range(depth):
        root = root.parent
    return root
