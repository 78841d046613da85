"""Kubernetes fixtures: an API-server emulator on a real port, a simulated kubelet running its pods on
this host, the platform's artifact routes, and executors pointed at the emulator through a real
``kubernetes_asyncio`` configuration."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from aihub.engine.executors.base import ArtifactInput, Job, JobKey, OutputDecl, Resources, StorageMount
from aihub.engine.executors.kubernetes import KubernetesExecutor
from aihub.storage.local import LocalArtifactStore, LocalLogStore
from tests.k8s.emulator import Emulator
from tests.k8s.jobs import JobController
from tests.k8s.kubelet import Kubelet
from tests.k8s.platform import Platform

NAMESPACE = "aihub-test"
TOKEN = "run-token-123"

MakeExecutor = Callable[..., Any]


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    emu = Emulator()
    await emu.serve()
    yield emu
    await emu.close()


@pytest.fixture
async def kubelet(emulator: Emulator, tmp_path: Path) -> AsyncIterator[Kubelet]:
    # K8S_SIM_BUSYBOX: a static busybox to inject into the simulated pods instead of the host's tools
    sim = Kubelet(
        emulator,
        NAMESPACE,
        tmp_path / "kubelet",
        busybox=os.environ.get("K8S_SIM_BUSYBOX") or shutil.which("busybox") or "",
    )
    sim.start()
    yield sim
    await sim.close()


@pytest.fixture
async def job_controller(emulator: Emulator) -> AsyncIterator[JobController]:
    """Runs the emulator's ``batch/v1`` Jobs (their pods simulated; see ``tests/k8s/jobs.py``)."""
    controller = JobController(emulator, NAMESPACE)
    controller.start()
    yield controller
    await controller.close()


@pytest.fixture
def artifacts(tmp_path: Path) -> LocalArtifactStore:
    store = LocalArtifactStore(tmp_path / "artifacts")
    store.root.mkdir(parents=True)
    return store


@pytest.fixture
def logs(tmp_path: Path) -> LocalLogStore:
    return LocalLogStore(tmp_path / "logs")


@pytest.fixture
async def platform(artifacts: LocalArtifactStore, tmp_path: Path) -> AsyncIterator[Platform]:
    api = Platform(artifacts, tmp_path / "uploads")
    await api.serve()
    yield api
    await api.close()


@pytest.fixture
def configuration(emulator: Emulator) -> client.Configuration:
    cfg = client.Configuration()
    cfg.host = emulator.url
    return cfg


@pytest.fixture
async def make_executor(
    configuration: client.Configuration, artifacts: LocalArtifactStore, logs: LocalLogStore
) -> AsyncIterator[MakeExecutor]:
    """``await make_executor(**options)``: a probed executor (closed after the test)."""
    made: list[KubernetesExecutor] = []

    async def make(**options: Any) -> KubernetesExecutor:
        options.setdefault("helper_image", "busybox:1.36.1-musl")
        executor = KubernetesExecutor(
            artifacts, logs, namespace=NAMESPACE, configuration=configuration, **options
        )
        await executor.probe()
        made.append(executor)
        return executor

    yield make
    for executor in made:
        await executor.close()


@pytest.fixture
async def executor(make_executor: MakeExecutor, kubelet: Kubelet) -> KubernetesExecutor:
    return await make_executor()  # type: ignore[no-any-return]


@pytest.fixture
def job(platform: Platform) -> Callable[..., Job]:
    """``job(command, node=..., outputs=[...], ...)``: a plain node's job (``sh -c command``)."""

    def make(
        command: str,
        *,
        run_id: int = 1,
        node: str = "step",
        attempt: int = 1,
        outputs: list[OutputDecl] | None = None,
        inputs: list[ArtifactInput] | None = None,
        env: dict[str, str] | None = None,
        resources: Resources | None = None,
        storages: list[StorageMount] | None = None,
        image: str = "python:3.11-slim",
        labels: dict[str, str] | None = None,
        workdir: str = "",
    ) -> Job:
        base = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AI_HUB_API_URL": platform.url,
            "AI_HUB_TOKEN": TOKEN,
            "AI_HUB_WORKFLOW_RUN_ID": str(run_id),
        }
        return Job(
            key=JobKey(run_id, node, attempt),
            argv=["sh", "-c", command],
            env={**base, **(env or {})},
            image=image,
            workdir=workdir,
            artifacts_in=inputs or [],
            outputs=outputs or [],
            storages=storages or [],
            resources=resources or Resources(),
            labels=labels or {},
        )

    return make


def pytest_sessionfinish(session: pytest.Session) -> None:
    """``AIHUB_K8S_CALLS_FILE`` set: write the session's Kubernetes API calls there (``tests/k8s/test_rbac.py``
    runs the other Kubernetes tests in a subprocess this way when they are not part of its own session)."""
    target = os.environ.get("AIHUB_K8S_CALLS_FILE")
    if target:
        import json

        from tests.k8s.emulator import SESSION_CALLS

        Path(target).write_text(json.dumps(sorted(SESSION_CALLS)))
