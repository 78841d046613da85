"""Module builds through the Kubernetes build backend: a Kaniko Job in the emulator, run by the simulated
job controller (``tests/k8s/jobs.py``), from a real git repository made of ``examples/modules/hash-file``."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from aihub.db.models import BuildStatus, ModuleBuild, ModuleStatus, User
from aihub.engine.builds import BuildManager
from aihub.engine.builds.kubernetes import KanikoOptions
from aihub.engine.builds.kubernetes_backend import KubernetesBuildBackend
from aihub.engine.builds.kubernetes_logs import STREAM_BREAKS
from aihub.engine.builds.local import LocalBuildBackend
from aihub.runtime import build_manager
from aihub.services.modules import DbBuildStore, read_build_log
from aihub.settings import Settings
from tests.k8s.conftest import NAMESPACE
from tests.k8s.emulator import Emulator, LogBuffer
from tests.k8s.jobs import DIGEST, JobController, Outcome
from tests.k8s.support import until_requests
from tests.k8s.test_k8s_engine import KUBECONFIG
from tests.modules.conftest import GitRepo, make_user, newest_build, register

pytestmark = pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)

REGISTRY = "registry.test:5000"


@pytest.fixture
def repo() -> Iterator[GitRepo]:
    """A real repository under /var/tmp holding examples/modules/hash-file, committed on ``main``."""
    path = Path(tempfile.mkdtemp(prefix="aihub-k8s-build-", dir="/var/tmp"))
    try:
        made = GitRepo(path)
        made.git("init", "-q", "-b", "main")
        made.add_example("hash-file")
        made.commit("initial")
        yield made
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.allow_file_git = True
    settings.registry = REGISTRY
    return settings


def backend(configuration: client.Configuration, **options: object) -> KubernetesBuildBackend:
    timeout = float(options.pop("timeout", 30.0))  # type: ignore[arg-type]
    log_retry = float(options.pop("log_retry", 2.0))  # type: ignore[arg-type]
    kaniko = KanikoOptions(namespace=NAMESPACE, allow_file_git=True, **options)  # type: ignore[arg-type]
    return KubernetesBuildBackend(kaniko, configuration=configuration, timeout=timeout, log_retry=log_retry)


@pytest.fixture
async def make_builds(db: Settings, configuration: client.Configuration) -> AsyncIterator[object]:
    made: list[BuildManager] = []

    async def make(**options: object) -> BuildManager:
        manager = BuildManager(db, DbBuildStore(), backend(configuration, **options), git_timeout=60)
        await manager.start()
        made.append(manager)
        return manager

    yield make
    for manager in made:
        await manager.close()


@pytest.fixture
async def owner(db: Settings) -> User:
    return await make_user("alice")


def build_log(settings: Settings, build: ModuleBuild) -> str:
    return (settings.data_dir / "builds" / f"{build.id}.log").read_text()


async def until_logged(builds: BuildManager, owner: User, build: ModuleBuild, line: str) -> str:
    """The build's log, read as its page reads it, once it holds ``line`` (polled, within 30 s)."""
    text = ""
    try:
        async with asyncio.timeout(30):
            while True:
                text = await read_build_log(builds, owner, build.id)
                if line in text:
                    return text
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"{line!r} is not in the build log after 30 s:\n{text}") from None


def assert_running(emulator: Emulator, build: ModuleBuild) -> None:
    job = emulator.job(NAMESPACE, f"aihub-build-{build.id}")
    assert job is not None and not job["status"].get("conditions"), job


def kaniko_log(emulator: Emulator) -> tuple[str, LogBuffer]:
    """The build pod's name and its kaniko container's log (a test writes into it as the container would)."""
    (pod,) = emulator.pods(NAMESPACE)
    name = pod["metadata"]["name"]
    return name, emulator.log(NAMESPACE, name, "kaniko")


def assert_once(text: str, *lines: str) -> None:
    """Each line is in the build log exactly once, in this order."""
    assert [text.count(f" {line}\n") for line in lines] == [1] * len(lines), text
    assert sorted(lines, key=text.index) == list(lines), text


def assert_job_gone(emulator: Emulator, build: ModuleBuild) -> None:
    name = f"aihub-build-{build.id}"
    assert emulator.deleted_jobs == [(NAMESPACE, name, "Background")]
    assert emulator.job(NAMESPACE, name) is None
    assert emulator.pods(NAMESPACE) == []  # the garbage collector took the pod with it


async def test_a_module_builds_through_a_kaniko_job(
    make_builds, owner: User, repo: GitRepo, emulator: Emulator, job_controller: JobController, db: Settings
) -> None:
    builds = await make_builds()
    module = await register(builds, owner, repo)
    build = await newest_build(module)
    sha = repo.git("rev-parse", "HEAD")
    assert build.status == BuildStatus.BUILT, build.message
    assert module.status == ModuleStatus.BUILT
    assert build.commit_sha == sha
    assert build.image == f"{REGISTRY}/data-processing/hash-file:{sha}"
    assert build.entrypoint == ["python3", "main.py"]  # the image's own, not mapped onto this host
    assert build.workdir == "/app" and build.context_path == ""

    (job,) = job_controller.seen
    assert job["metadata"]["name"] == f"aihub-build-{build.id}"
    assert job["metadata"]["namespace"] == NAMESPACE
    assert job["metadata"]["labels"]["aihub/build"] == str(build.id)
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    (clone,) = pod["initContainers"]
    assert clone["command"][3:] == ["clone", "main", repo.url, sha]  # the exact commit that was checked
    assert {"name": "GIT_ALLOW_PROTOCOL", "value": "https:http:ssh:file"} in clone["env"]
    (kaniko,) = pod["containers"]
    assert kaniko["image"].startswith("gcr.io/kaniko-project/executor:")
    assert f"--destination={REGISTRY}/data-processing/hash-file:{sha}" in kaniko["args"]
    assert "--context=dir:///workspace/src" in kaniko["args"]
    assert kaniko["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}
    assert [v["name"] for v in pod["volumes"]] == ["workspace"]  # no push secret configured

    text = build_log(db, build)
    assert f"build Job {NAMESPACE}/aihub-build-{build.id} created" in text
    assert "[clone] Cloning into '/workspace/src'..." in text
    assert "[kaniko] INFO Pushing image" in text
    assert f"image pushed: {build.image} ({DIGEST})" in text
    assert text.rstrip().endswith("build succeeded")
    assert_job_gone(emulator, build)


async def test_a_push_secret_and_resources_reach_the_job(
    make_builds, owner: User, repo: GitRepo, job_controller: JobController
) -> None:
    builds = await make_builds(registry_secret="push-creds", cpu="2", memory="4Gi")
    module = await register(builds, owner, repo)
    assert (await newest_build(module)).status == BuildStatus.BUILT
    (job,) = job_controller.seen
    pod = job["spec"]["template"]["spec"]
    kaniko = pod["containers"][0]
    assert kaniko["resources"] == {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}
    assert {"name": "docker-config", "mountPath": "/kaniko/.docker", "readOnly": True} in kaniko[
        "volumeMounts"
    ]
    secret = next(v for v in pod["volumes"] if v["name"] == "docker-config")["secret"]
    assert secret["secretName"] == "push-creds"


async def test_a_failing_kaniko_container_fails_the_build_with_its_message_and_logs(
    make_builds, owner: User, repo: GitRepo, emulator: Emulator, job_controller: JobController, db: Settings
) -> None:
    job_controller.outcome = Outcome(
        exit_code=1,
        log=[
            "INFO Running pip install -r requirements.txt",
            "ERROR: No matching distribution found for nump",
        ],
        message="error building image: error building stage: failed to execute command: exit status 1",
    )
    builds = await make_builds()
    module = await register(builds, owner, repo)
    build = await newest_build(module)
    assert build.status == BuildStatus.BUILD_FAILED
    assert module.status == ModuleStatus.BUILD_FAILED
    assert build.image == ""
    assert build.message.startswith(
        "building or pushing the image failed (container kaniko exited with 1, Error): "
        "error building image: error building stage: failed to execute command: exit status 1\n"
        "last log lines:\n"
    )
    assert "[kaniko] ERROR: No matching distribution found for nump" in build.message
    text = build_log(db, build)
    assert "[kaniko] INFO Running pip install -r requirements.txt" in text
    assert "build failed: building or pushing the image failed" in text
    assert_job_gone(emulator, build)


async def test_a_failing_clone_says_so(
    make_builds, owner: User, repo: GitRepo, emulator: Emulator, job_controller: JobController
) -> None:
    moved = "branch/tag main moved from aaaa to bbbb since the build was checked; rebuild the module"
    job_controller.outcome = Outcome(init_exit=1, init_log=[moved])
    builds = await make_builds()
    build = await newest_build(await register(builds, owner, repo))
    assert build.status == BuildStatus.BUILD_FAILED
    assert build.message.startswith("cloning the commit failed (container clone exited with 1, Error)")
    assert f"[clone] {moved}" in build.message
    assert_job_gone(emulator, build)


async def test_the_job_watch_is_resumed_and_relisted_after_410(
    make_builds, owner: User, repo: GitRepo, emulator: Emulator, job_controller: JobController
) -> None:
    job_controller.hold()  # the Job's pod stays Pending until released
    builds = await make_builds()
    module = await register(builds, owner, repo, wait=False)
    build = await newest_build(module)
    await emulator.until_watches("jobs", 1)
    emulator.drop_watches()  # the server ends the watch: resumed from the last version seen
    await emulator.until_watches("jobs", 2)
    first, second = emulator.watches("jobs")
    assert second["resourceVersion"] == first["resourceVersion"]
    # a change the Job watch does not see, then a compaction: resuming from its version gets 410 Gone
    emulator.add_event(emulator.pods(NAMESPACE)[0], "Scheduled", "unrelated change")
    emulator.compact()
    emulator.drop_watches()
    await emulator.until_watches("jobs", 4)
    third, fourth = emulator.watches("jobs")[2:]
    assert int(third["resourceVersion"]) < emulator.compacted_rv <= int(fourth["resourceVersion"])
    lists = [q for m, p, q in emulator.requests if m == "GET" and p.endswith("/jobs") and "watch" not in q]
    assert len(lists) == 2  # listed again after the 410
    job_controller.release()
    await builds.wait(build.id)
    await build.refresh_from_db()
    assert build.status == BuildStatus.BUILT, build.message
    assert_job_gone(emulator, build)


async def test_a_build_that_takes_too_long_fails_and_its_job_is_deleted(
    make_builds, owner: User, repo: GitRepo, emulator: Emulator, job_controller: JobController
) -> None:
    job_controller.hold()  # never scheduled: only the backend's timeout ends the build
    builds = await make_builds(timeout=0.5)
    build = await newest_build(await register(builds, owner, repo))
    assert build.status == BuildStatus.BUILD_FAILED
    assert build.message == f"the build Job aihub-build-{build.id} did not finish within 0.5 seconds"
    assert_job_gone(emulator, build)


async def test_a_job_left_by_an_interrupted_attempt_is_replaced(
    make_builds,
    owner: User,
    repo: GitRepo,
    emulator: Emulator,
    job_controller: JobController,
    db: Settings,
    configuration: client.Configuration,
) -> None:
    builds = await make_builds()
    first = await newest_build(await register(builds, owner, repo))
    stale_name = f"aihub-build-{first.id + 1}"  # the next build's Job, as if an earlier process created it
    stale = {**job_controller.seen[0], "metadata": {"name": stale_name, "labels": {"stale": "yes"}}}
    stale.pop("status", None)
    job_controller.hold()
    async with client.ApiClient(configuration) as api:
        await client.BatchV1Api(api).create_namespaced_job(NAMESPACE, stale)
    job_controller.release()
    module = await register(builds, owner, repo, name="hash-file-2")
    second = await newest_build(module)
    assert second.id == first.id + 1
    assert second.status == BuildStatus.BUILT, second.message
    assert "of an interrupted attempt exists; deleting it and starting again" in build_log(db, second)
    assert [job["metadata"].get("labels", {}).get("stale") for job in job_controller.seen] == [
        None,
        "yes",
        None,
    ]
    assert emulator.job(NAMESPACE, stale_name) is None


async def test_the_manager_picks_the_backend_from_settings(
    settings: Settings,
    db: Settings,
    emulator: Emulator,
    job_controller: JobController,
    repo: GitRepo,
    owner: User,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert isinstance(build_manager(settings).backend, LocalBuildBackend)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(url=emulator.url, namespace=NAMESPACE))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    settings.executor = "kubernetes"
    settings.kubernetes_namespace = NAMESPACE
    builds = build_manager(settings, git_timeout=60)
    assert isinstance(builds.backend, KubernetesBuildBackend)
    await builds.start()
    try:
        build = await newest_build(await register(builds, owner, repo))
    finally:
        await builds.close()
    assert build.status == BuildStatus.BUILT, build.message
    assert build.image == f"{REGISTRY}/data-processing/hash-file:{build.commit_sha}"
    assert_job_gone(emulator, build)


CLONED = "[clone] Cloning into '/workspace/src'..."


async def test_build_logs_reach_the_build_log_while_the_job_runs(
    make_builds, owner: User, repo: GitRepo, emulator: Emulator, job_controller: JobController, db: Settings
) -> None:
    """Hazard: the pod's logs were copied only once the Job had ended, so an author watching a long Kaniko
    build saw nothing until it was over; and a log copied live must not be copied again at the end."""
    gate = asyncio.Event()
    job_controller.outcome = Outcome(log=["INFO Retrieving image manifest python:3.11-slim"], gate=gate)
    builds = await make_builds()
    build = await newest_build(await register(builds, owner, repo, wait=False))
    text = await until_logged(
        builds, owner, build, "[kaniko] INFO Retrieving image manifest python:3.11-slim"
    )
    assert CLONED in text
    assert_running(emulator, build)
    pod, kaniko = kaniko_log(emulator)
    kaniko.write(b"INFO Taking snapshot of full filesystem...\n")
    await until_logged(builds, owner, build, "[kaniko] INFO Taking snapshot of full filesystem...")
    assert_running(emulator, build)
    kaniko.write(b"INFO Pushing image")  # no newline: the log's end ends the line
    gate.set()
    await builds.wait(build.id)
    await build.refresh_from_db()
    assert build.status == BuildStatus.BUILT, build.message
    assert_once(
        build_log(db, build),
        CLONED,
        "[kaniko] INFO Retrieving image manifest python:3.11-slim",
        "[kaniko] INFO Taking snapshot of full filesystem...",
        "[kaniko] INFO Pushing image",
        f"image pushed: {build.image} ({DIGEST})",
    )
    assert emulator.count("GET", f"/pods/{pod}/log", container="kaniko", follow="True") == 1
    assert emulator.count("GET", f"/pods/{pod}/log", container="kaniko", follow="False") == 0  # no re-read
    assert_job_gone(emulator, build)


async def test_a_broken_log_stream_is_followed_again_without_duplicates(
    make_builds, owner: User, repo: GitRepo, emulator: Emulator, job_controller: JobController, db: Settings
) -> None:
    """Hazard: a dropped log connection (an API server restart, a proxy's idle timeout) failed the build or
    ended the live log; or its re-read from the log's start wrote the first lines twice."""
    gate = asyncio.Event()
    job_controller.outcome = Outcome(log=["INFO before the drop"], gate=gate)
    builds = await make_builds(log_retry=0.01)
    build = await newest_build(await register(builds, owner, repo, wait=False))
    await until_logged(builds, owner, build, "[kaniko] INFO before the drop")
    pod, kaniko = kaniko_log(emulator)
    kaniko.drop()
    await until_requests(emulator, "GET", f"/pods/{pod}/log", 2, container="kaniko", follow="True")
    kaniko.write(b"INFO after the drop\n")
    text = await until_logged(builds, owner, build, "[kaniko] INFO after the drop")
    assert "the kaniko container's log stream broke (" in text and "); following it again" in text
    assert_running(emulator, build)
    gate.set()
    await builds.wait(build.id)
    await build.refresh_from_db()
    assert build.status == BuildStatus.BUILT, build.message
    assert_once(build_log(db, build), CLONED, "[kaniko] INFO before the drop", "[kaniko] INFO after the drop")
    assert_job_gone(emulator, build)


async def test_a_log_stream_that_keeps_breaking_is_read_once_at_the_end(
    make_builds, owner: User, repo: GitRepo, emulator: Emulator, job_controller: JobController, db: Settings
) -> None:
    """Hazard: a log stream that cannot be kept open was retried forever (a line in the build log each time),
    or what the container wrote after it was given up never reached the build log."""
    gate = asyncio.Event()
    job_controller.outcome = Outcome(log=["INFO streamed"], gate=gate)
    builds = await make_builds(log_retry=0.01)
    build = await newest_build(await register(builds, owner, repo, wait=False))
    await until_logged(builds, owner, build, "[kaniko] INFO streamed")
    pod, kaniko = kaniko_log(emulator)
    for follows in range(1, STREAM_BREAKS + 1):
        await until_requests(emulator, "GET", f"/pods/{pod}/log", follows, container="kaniko", follow="True")
        kaniko.drop()
    text = await until_logged(builds, owner, build, "its log is copied when the build ends")
    assert f"the kaniko container's log stream broke {STREAM_BREAKS} times in a row (" in text
    assert text.count("; following it again") == STREAM_BREAKS - 1
    kaniko.write(b"INFO written after the stream was given up\n")
    assert_running(emulator, build)
    gate.set()
    await builds.wait(build.id)
    await build.refresh_from_db()
    assert build.status == BuildStatus.BUILT, build.message
    assert_once(
        build_log(db, build),
        CLONED,
        "[kaniko] INFO streamed",
        "[kaniko] INFO written after the stream was given up",
        "build succeeded",
    )
    assert emulator.count("GET", f"/pods/{pod}/log", container="kaniko", follow="True") == STREAM_BREAKS
    assert emulator.count("GET", f"/pods/{pod}/log", container="kaniko", follow="False") == 1
    assert_job_gone(emulator, build)


async def test_a_shutdown_during_a_build_closes_its_log_streams(
    make_builds, owner: User, repo: GitRepo, emulator: Emulator, job_controller: JobController
) -> None:
    """Hazard: a build cancelled by the server's shutdown left its log-following task (and its open stream)
    running after the manager had closed."""
    job_controller.outcome = Outcome(log=["INFO building"], gate=asyncio.Event())  # never released
    builds = await make_builds()
    build = await newest_build(await register(builds, owner, repo, wait=False))
    await until_logged(builds, owner, build, "[kaniko] INFO building")
    await builds.close()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == f"aihub-build-{build.id} logs"]
    await build.refresh_from_db()
    assert build.status == BuildStatus.BUILDING  # run again by the next start
    assert_job_gone(emulator, build)
