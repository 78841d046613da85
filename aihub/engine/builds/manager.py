"""Module builds as background jobs: clone, check, build, record — with a log a module author can read.

:class:`BuildManager` owns one asyncio task per build in a tracked set (cancelled and awaited by ``close()``).
A build runs :meth:`BuildManager.run`:

1. shallow-clone the module's git URL at its branch/tag into a fresh workspace and record the commit SHA;
2. check that the Dockerfile exists at its path inside the repository (no ``..`` and no symlink leaving it),
   uses an exec-form ``ENTRYPOINT`` and no ``CMD``; that the build context is a directory of the repository;
   that the README exists;
3. hand the build context to the backend (the local backend replays the Dockerfile's copies onto a kept
   directory and maps ``WORKDIR``/``ENTRYPOINT`` onto it; with ``executor = "kubernetes"`` the Kubernetes
   backend runs a Kaniko Job that pushes the image, see :mod:`aihub.engine.builds.kubernetes_backend`);
4. remove the workspace, whatever happened, and record the outcome through the :class:`BuildStore`.

Every step writes to ``<data_dir>/builds/<build_id>.log``. A failure the author can fix ends the build in
BUILD_FAILED with a message saying what to change. The manager never touches the database itself: the store
(``aihub.services.modules``) loads the job and records the result. A build interrupted by shutdown stays
BUILDING and is run again by the next ``start()``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from aihub.domain.builds import BuildJob, BuildOutcome, BuildStore
from aihub.engine.builds.backend import BuildBackend
from aihub.engine.builds.dockerfile import DockerfileError, parse_dockerfile
from aihub.engine.builds.git import GitError, clone, redact_url
from aihub.engine.builds.kubernetes import image_name
from aihub.engine.builds.local import BuildFailure, LocalBuildBackend, inside
from aihub.settings import Settings

if TYPE_CHECKING:
    from aihub.metrics import Metrics

__all__ = ["BuildJob", "BuildManager", "BuildOutcome", "BuildStore"]

log = logging.getLogger("aihub.builds")

MAX_TEXT_FILE = 1024 * 1024  # Dockerfile and README


class BuildLogArchive(Protocol):
    """The part of a log store that keeps build logs (aihub.storage)."""

    async def archive_build_log(self, build_id: int, path: Path) -> None: ...

    async def read_build_log(self, build_id: int, path: Path, offset: int, limit: int) -> bytes: ...


class BuildLog:
    """Append-only, line-oriented, flushed after every line (readers follow it while the build runs)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = path.open("a", encoding="utf-8")

    def __call__(self, line: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        self._file.write(f"{stamp} {line}\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _read_text(path: Path, what: str) -> str:
    if path.stat().st_size > MAX_TEXT_FILE:
        raise BuildFailure(f"the {what} is larger than {MAX_TEXT_FILE // 1024} KiB")
    return path.read_text(encoding="utf-8", errors="replace")


def _find_file(repo: Path, relative: str, what: str, ref: str) -> Path:
    path = inside(repo, relative)
    if path is None:
        raise BuildFailure(f"the {what} path {relative!r} leads outside the repository")
    try:
        parts = path.resolve().relative_to(repo.resolve()).parts
    except (OSError, ValueError):
        parts = ()
    if ".git" in (part.lower() for part in parts):  # also through a symlink: .git/config may hold tokens
        raise BuildFailure(f"the {what} path {relative!r} leads into .git/, git's own files")
    if not path.is_file():
        kind = "is not a file" if path.exists() else "does not exist"
        raise BuildFailure(f"the {what} {relative!r} {kind} in the repository at {ref!r}")
    return path


class BuildManager:
    def __init__(
        self,
        settings: Settings,
        store: BuildStore,
        backend: BuildBackend | None = None,
        *,
        git_timeout: float = 300.0,
        max_parallel: int = 2,
    ) -> None:
        self.settings = settings
        self.store = store
        self.dir = settings.data_dir / "builds"
        self.backend = backend or _default_backend(settings, self.dir)
        self.git_timeout = git_timeout
        self._slots = asyncio.Semaphore(max_parallel)
        self._tasks: dict[int, asyncio.Task[Any]] = {}
        self._started = False
        #: where build logs are archived when a build ends and read from (set by the runtime; None: only
        #: this host's files)
        self.logs: BuildLogArchive | None = None
        #: where builds run to the end are counted (``/metrics``); the runtime sets it
        self.metrics: Metrics | None = None

    # ----------------------------------------------------------------- lifecycle
    async def start(self, *, resume: bool = True) -> None:
        """Accept builds; (``resume``) run again the builds an earlier process left BUILDING. Engine workers
        of a group resume none here: each runs only the builds its partitions own (``pick_up_builds``)."""
        self._started = True
        if resume:
            for build_id in await self.store.pending():
                self.submit(build_id)

    async def let_go(self, keeps: Callable[[int], bool]) -> None:
        """Cancel (and await) the running builds whose id ``keeps`` refuses: another worker of the engine group
        owns them now and runs them again; they stay BUILDING meanwhile, so no build runs in two workers."""
        gone = [task for build_id, task in list(self._tasks.items()) if not keeps(build_id)]
        for task in gone:
            task.cancel()
        await asyncio.gather(*gone, return_exceptions=True)

    async def close(self) -> None:
        self._started = False
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.backend.close()

    def submit(self, build_id: int) -> None:
        """Run the build in the background (no-op before ``start()``: the next start picks it up)."""
        if not self._started or build_id in self._tasks:
            return
        task = asyncio.create_task(self._guarded(build_id), name=f"build {build_id}")
        self._tasks[build_id] = task
        task.add_done_callback(lambda t: self._done(build_id, t))

    def _done(self, build_id: int, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(build_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("build %s failed", build_id, exc_info=task.exception())

    async def wait(self, build_id: int) -> None:
        """Return when the build's background job has ended (at once if none is running)."""
        task = self._tasks.get(build_id)
        if task is not None:
            await asyncio.shield(task)

    def log_path(self, build_id: int) -> Path:
        return self.dir / f"{build_id}.log"

    # ----------------------------------------------------------------- the pipeline
    async def _guarded(self, build_id: int) -> None:
        async with self._slots:
            job = await self.store.load(build_id)
            if job is None:
                return
            started = time.perf_counter()
            outcome = await self.run(job)
            if self.logs is not None:
                try:
                    await self.logs.archive_build_log(build_id, self.log_path(build_id))
                except Exception as exc:  # the log stays on this host; the build's outcome matters more
                    log.warning("could not archive the log of build %s: %s", build_id, exc)
            await self.store.finish(build_id, outcome)
            if self.metrics is not None:
                result = "BUILT" if outcome.ok else "BUILD_FAILED"
                self.metrics.builds.labels(result).inc()
                self.metrics.build_duration.labels(result).observe(time.perf_counter() - started)

    async def run(self, job: BuildJob) -> BuildOutcome:
        """Clone, check and build ``job``; the outcome says BUILT or why not. Cancellation propagates."""
        # opened here, not in a thread: a cancelled thread would leak the open file
        write = BuildLog(self.log_path(job.build_id))
        try:
            return await self._run_logged(job, write)
        finally:
            write.close()

    async def _run_logged(self, job: BuildJob, write: BuildLog) -> BuildOutcome:
        work_root = self.dir / ".work"
        await asyncio.to_thread(work_root.mkdir, parents=True, exist_ok=True)
        workspace = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=f"{job.build_id}-", dir=work_root))
        sha = ""
        try:
            write(  # numbered as the module page numbers its builds
                f"build {job.number or job.build_id} of module {job.module!r} from {redact_url(job.git_url)}"
                f" at {job.ref!r}"
            )
            repo = workspace / "src"
            sha = await clone(
                job.git_url,
                job.ref,
                repo,
                allow_file=self.settings.allow_file_git,
                time_limit=self.git_timeout,
                log=write,
                allowed_hosts=[h.strip() for h in self.settings.git_allowed_hosts.split(",") if h.strip()],
            )
            outcome = await self._build(job, repo, sha, write)
            write("build succeeded")
            return outcome
        except (GitError, DockerfileError, BuildFailure) as exc:
            write(f"build failed: {exc}")
            return BuildOutcome(error=str(exc), commit_sha=sha)
        except asyncio.CancelledError:
            write("build interrupted (the server is stopping); it runs again on the next start")
            raise
        except Exception as exc:
            log.exception("build %s crashed", job.build_id)
            write(f"build failed: internal error: {exc}")
            return BuildOutcome(error=f"internal error: {exc}", commit_sha=sha)
        finally:
            await asyncio.to_thread(shutil.rmtree, workspace, True)

    async def _build(self, job: BuildJob, repo: Path, sha: str, write: Callable[[str], None]) -> BuildOutcome:
        dockerfile = _find_file(repo, job.dockerfile_path, "Dockerfile", job.ref)
        info = parse_dockerfile(await asyncio.to_thread(_read_text, dockerfile, "Dockerfile"))
        write(f"Dockerfile {job.dockerfile_path}: ENTRYPOINT {list(info.entrypoint)}, WORKDIR {info.workdir}")
        readme = await asyncio.to_thread(
            _read_text, _find_file(repo, job.readme_path, "README", job.ref), "README"
        )
        write(f"README {job.readme_path}: {len(readme)} characters")
        context = inside(repo, job.build_context)
        if context is None:
            raise BuildFailure(f"the build context {job.build_context!r} leads outside the repository")
        if not context.is_dir():
            raise BuildFailure(
                f"the build context {job.build_context!r} is not a directory of the repository"
            )
        image = image_name(self.settings.registry, job.category, job.module, sha)
        built = await self.backend.produce(job, sha=sha, image=image, info=info, context=context, log=write)
        write(f"image {image}")
        return BuildOutcome(
            commit_sha=sha,
            image=image,
            entrypoint=built.entrypoint,
            workdir=built.workdir,
            context_path=built.context_path,
            readme=readme,
        )


def _default_backend(settings: Settings, builds_dir: Path) -> BuildBackend:
    """``AIHUB_BUILDER``; ``auto``: the Kubernetes backend (a Kaniko Job) when nodes run on Kubernetes, the
    container backend (podman/docker build) when they run in containers, else the local one."""
    builder = settings.builder if settings.builder != "auto" else settings.executor
    if builder == "container":
        from aihub.engine.builds.container_backend import ContainerBuildBackend

        return ContainerBuildBackend.from_settings(settings)
    if builder == "kubernetes":
        from aihub.engine.builds.kubernetes_backend import KubernetesBuildBackend

        return KubernetesBuildBackend.from_settings(settings)
    return LocalBuildBackend(builds_dir)
