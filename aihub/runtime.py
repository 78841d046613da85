"""The assembled core: database, bus, storage, executor and engine, started and stopped together.

``aihub serve`` and the embedded ``aihub run`` both use it, so they behave the same.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aihub.bus import Bus, build_bus
from aihub.db.setup import close_db, init_db, migrate, sqlite_file
from aihub.db.wal import checkpointer_for
from aihub.domain.bounds import DEFAULT_LIMITS
from aihub.engine.builds import BuildManager
from aihub.engine.executors.base import Executor
from aihub.engine.executors.k8s_artifacts import repack_upload
from aihub.engine.scheduler import Engine
from aihub.metrics import Metrics
from aihub.services import admin, tokens
from aihub.services.artifacts import UploadRepacker
from aihub.services.executors import AttemptViews
from aihub.services.modules import DbBuildStore
from aihub.services.workflows import configure_spec_limits
from aihub.settings import Settings
from aihub.storage.base import ArtifactStore
from aihub.storage.local import LocalLogStore, build_storage
from aihub.storage.logcap import LogCapper

log = logging.getLogger("aihub")


@dataclass
class Runtime:
    settings: Settings
    bus: Bus
    artifacts: ArtifactStore
    logs: LocalLogStore
    executor: Executor
    engine: Engine
    builds: BuildManager
    metrics: Metrics = field(default_factory=Metrics)
    #: how an output a pod uploads is stored (the engine's deterministic repacking)
    repack_upload: UploadRepacker = field(default=repack_upload)

    @property
    def attempt_views(self) -> AttemptViews:
        """What the executor tells about an attempt (the services' protocol; the engine answers)."""
        return self.engine

    #: set when the server begins to shut down (SIGTERM): live streams end so their clients reconnect elsewhere
    draining: asyncio.Event = field(default_factory=asyncio.Event)


async def migrate_database(settings: Settings) -> list[str]:
    """``aihub migrate``: apply the pending migrations (a server applies them too when it starts)."""
    return await migrate(settings)


def build_executor(settings: Settings, artifacts: ArtifactStore, logs: LocalLogStore) -> Executor:
    if settings.executor == "kubernetes":
        from aihub.engine.executors.kubernetes import KubernetesExecutor

        return KubernetesExecutor.from_settings(settings, artifacts, logs)
    if settings.executor == "container":
        from aihub.engine.executors.container import ContainerExecutor

        return ContainerExecutor(
            settings.data_dir / "runs",
            artifacts,
            logs,
            engine=settings.container_engine,
            default_image=settings.container_default_image,
            network=settings.container_network,
            insecure_registries=[settings.registry.split("/", 1)[0]] if settings.registry_insecure else [],
            keep_containers=settings.container_keep,
        )
    from aihub.engine.executors.local import LocalExecutor

    return LocalExecutor(
        settings.data_dir / "runs",
        artifacts,
        logs,
        isolation=settings.local_isolation,
        run_as=settings.local_run_as,
        private_paths=[settings.data_dir],
    )


def build_manager(settings: Settings, **options: Any) -> BuildManager:
    """The build manager of an installation: the engine's runner, recording through the services' store."""
    return BuildManager(settings, DbBuildStore(), **options)


def running_attempts(engine: Engine) -> Iterator[tuple[int, str, int]]:
    """(run id, node, attempt number) of the attempts this engine runs now."""
    for run_id, state in list(engine.runs.items()):
        for name, running in list(state.running.items()):
            if running.attempt is not None:
                yield run_id, name, running.attempt.number


def running_logs(engine: Engine, logs: LocalLogStore) -> Iterator[Path]:
    """The log files of the attempts this engine runs now (what the log capper watches)."""
    for run_id, name, number in running_attempts(engine):
        yield logs.path(run_id, name, number)


async def checkpoint_logs(engine: Engine, logs: LocalLogStore, interval: float) -> None:
    """Send the logs of running attempts to a shared store now and then (replicas on other hosts follow them)."""
    while True:
        await asyncio.sleep(interval)
        for run_id, name, number in list(running_attempts(engine)):
            try:
                await logs.checkpoint(run_id, name, number)
            except Exception as exc:  # the next look tries again; the archive at the end is what counts
                log.warning("could not send the running log of run %s node %s: %s", run_id, name, exc)


#: seconds between looks for builds other processes requested (split roles: an API replica records the build,
#: a worker runs it)
BUILD_PICKUP_SECONDS = 2.0


async def pick_up_builds(builds: BuildManager, bus: Bus, interval: float = BUILD_PICKUP_SECONDS) -> None:
    """Run the BUILDING builds that no process runs yet, each in the one worker whose engine partitions own its
    id (outside an engine group: this process). ``submit`` ignores a build already running here."""
    owns = getattr(bus, "owns", None)
    while True:
        await asyncio.sleep(interval)
        try:
            for build_id in await builds.store.pending():
                if owns is None or owns(build_id):
                    builds.submit(build_id)
        except Exception:  # the database may be away for a moment: the next look tries again
            log.exception("looking for requested module builds failed")


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    run_engine: bool = True,
    recover: bool = True,
    apply_migrations: bool = True,
    metrics: Metrics | None = None,
    pick_up: bool = False,
) -> AsyncIterator[Runtime]:
    """``metrics``: where the engine counts (a fresh ``Metrics`` if not given); with ``run_engine`` its capacity
    and queues are reported there too. ``pick_up`` (with ``run_engine``): also run the builds that other
    processes (API replicas) requested, found by polling the database."""
    metrics = metrics if metrics is not None else Metrics()
    settings.ensure_dirs()
    configure_spec_limits(
        replace(DEFAULT_LIMITS, max_bytes=settings.max_spec_bytes, max_nodes=settings.max_spec_nodes)
    )
    if apply_migrations:
        await migrate(settings)
    await init_db(settings)
    bus = build_bus(settings)
    if hasattr(bus, "metrics"):
        bus.metrics = metrics
    await bus.start()
    tokens.attach_bus(bus)  # cached logins are forgotten in every process when a token or user changes
    metrics.watch_database()
    artifacts, logs = build_storage(settings)
    executor = build_executor(settings, artifacts, logs)
    engine = Engine(settings, bus, executor, metrics)
    builds = build_manager(settings)
    builds.metrics = metrics
    capper = LogCapper(lambda: running_logs(engine, logs), settings.max_log_bytes)

    async def attempt_ended(run_id: int, node: str, number: int) -> None:
        await capper.cap(logs.location(run_id, node, number))
        try:  # written once the attempt has ended: what every replica serves from now on
            await logs.archive(run_id, node, number)
        except Exception as exc:  # the log stays on this host; the node's outcome matters more
            log.warning(
                "could not archive the log of run %s node %s attempt %s: %s", run_id, node, number, exc
            )

    engine.attempt_ended.append(attempt_ended)
    builds.logs = logs
    pickup: asyncio.Task[None] | None = None
    checkpoints: asyncio.Task[None] | None = None
    stop_listening = None
    checkpointer = checkpointer_for(sqlite_file(settings))  # (SQLite: WAL checkpoints off the commit path)
    try:
        if run_engine:
            partition_for = getattr(bus, "partition_for", None)
            if pick_up and partition_for is not None:
                # engine workers: a build runs in the worker whose partitions own its id (found by
                # `pick_up_builds`); a rebalance that takes them away cancels it here before the next owner
                # runs it, so two workers starting together never build one module twice
                engine.partitions_revoked.append(
                    lambda revoked: builds.let_go(lambda build_id: partition_for(build_id) not in revoked)
                )
            await engine.start(recover=recover)
            await builds.start(resume=not (pick_up and partition_for is not None))
            stop_listening = admin.on_clusters_changed(engine.load_pools)
            capper.start()
            metrics.watch_engine(engine)
            if pick_up:
                pickup = asyncio.create_task(pick_up_builds(builds, bus), name="pick up builds")
            if getattr(logs, "checkpoints", False):
                from aihub.storage.s3 import CHECKPOINT_SECONDS

                checkpoints = asyncio.create_task(
                    checkpoint_logs(engine, logs, CHECKPOINT_SECONDS), name="checkpoint logs"
                )
        yield Runtime(settings, bus, artifacts, logs, executor, engine, builds, metrics)
    finally:
        if stop_listening is not None:
            stop_listening()
        for task in (pickup, checkpoints):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await capper.close()
        await builds.close()
        await engine.close()
        tokens.detach_bus(bus)
        try:
            await bus.close()  # may fail (a broker that is gone): the database is closed all the same
        finally:
            if checkpointer is not None:
                await checkpointer.close()
            await close_db()
