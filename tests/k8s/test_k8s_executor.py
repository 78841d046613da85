"""The Kubernetes executor against the API-server emulator, with the simulated kubelet running the pods'
real wrapper and commands on this host, and the platform's artifact routes on a real port."""

from __future__ import annotations

import asyncio
import hashlib
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from aihub.engine.artifacts import pack, unpack
from aihub.engine.executors.base import ArtifactInput, Job, JobKey, OutputDecl
from aihub.engine.executors.k8s_artifacts import archive_kind, store_uploaded_output
from aihub.engine.executors.kubernetes import KubernetesExecutor
from aihub.storage.local import LocalArtifactStore, LocalLogStore
from tests.k8s.conftest import NAMESPACE, TOKEN, MakeExecutor
from tests.k8s.emulator import Emulator
from tests.k8s.kubelet import Kubelet
from tests.k8s.platform import Platform
from tests.k8s.support import archived, log_contains, until_requests, waiting_for

MakeJob = Callable[..., Job]


async def log_text(logs: LocalLogStore, key: JobKey) -> str:
    data, _ = await logs.read(key.run_id, key.node, key.attempt, 0, 1 << 20)
    return data.decode()


def pod_lists(emulator: Emulator) -> int:
    """How often the executor listed its pods (not counting watches or reads by name)."""
    return sum(
        1
        for method, path, query in emulator.requests
        if method == "GET"
        and path.endswith("/pods")
        and "watch" not in query
        and query.get("labelSelector") == "aihub/run"
    )


async def stored(artifacts: LocalArtifactStore, directory: Path) -> str:
    """Pack ``directory`` (a file or dir) and store it; its digest."""
    archive = directory.parent / f".{directory.name}.tar.gz"
    pack(directory, archive)
    digest, _ = await artifacts.put_file(archive)
    return digest


# --------------------------------------------------------------------------------------- success / failure


async def test_success_collects_text_and_path_outputs(
    executor: KubernetesExecutor,
    job: MakeJob,
    tmp_path: Path,
    artifacts: LocalArtifactStore,
    platform: Platform,
) -> None:
    text, single, tree = tmp_path / "msg.txt", tmp_path / "one.bin", tmp_path / "tree"
    command = (
        f"echo working; printf 'hello world\\n' > {text}; printf 'abc' > {single}; "
        f"mkdir -p {tree}/sub && echo x > {tree}/sub/x && echo y > {tree}/y"
    )
    outputs = [
        OutputDecl("msg", str(text), "text"),
        OutputDecl("one", str(single), "path"),
        OutputDecl("tree", str(tree), "path"),
    ]
    the_job = job(command, outputs=outputs)
    report = await executor.wait(await executor.start(the_job))

    assert report.ok, report
    assert report.exit_code == 0
    assert report.outputs["msg"].value == "hello world"  # one trailing newline stripped
    assert report.started_at is not None and report.finished_at is not None
    for name, path in (("one", single), ("tree", tree)):
        value = report.outputs[name]
        assert (value.type, value.value) == ("path", str(path))
        # stored deterministically: the same bytes the local executor would store for this content
        expected = tmp_path / f"{name}.expected.tar.gz"
        pack(path, expected)
        assert value.digest == hashlib.sha256(expected.read_bytes()).hexdigest()
        assert value.size == expected.stat().st_size
        restored = tmp_path / f"{name}-restored"
        unpack(artifacts.path(value.digest), restored)
        if path.is_dir():
            assert (restored / "sub" / "x").read_text() == "x\n"
        else:
            assert restored.read_bytes() == b"abc"
    uploads = [r for r in platform.requests if r[1] == "/artifacts/upload"]
    assert [token for _, _, token in uploads] == [TOKEN, TOKEN]


async def test_a_large_binary_output_is_streamed_up_intact(
    executor: KubernetesExecutor, job: MakeJob, tmp_path: Path, artifacts: LocalArtifactStore
) -> None:
    """Hazard: busybox's wget sends a POST body as a C string (it stops at the first NUL byte) and holds it
    in memory; uploads must carry any bytes, of any size."""
    blob = tmp_path / "blob.bin"
    the_job = job(f"head -c 3000000 /dev/urandom > {blob}", outputs=[OutputDecl("blob", str(blob), "path")])
    report = await executor.wait(await executor.start(the_job))
    assert report.ok, report
    restored = tmp_path / "restored"
    unpack(artifacts.path(report.outputs["blob"].digest or ""), restored)
    assert restored.read_bytes() == blob.read_bytes()


async def test_failure_reports_the_exit_code(
    executor: KubernetesExecutor, job: MakeJob, logs: LocalLogStore, tmp_path: Path
) -> None:
    the_job = job("echo oops; exit 3", outputs=[OutputDecl("o", str(tmp_path / "never"), "text")])
    report = await executor.wait(await executor.start(the_job))
    assert report.exit_code == 3
    assert report.error is None
    assert not report.ok
    assert report.outputs == {}
    assert (await log_text(logs, the_job.key)).splitlines() == ["oops"]


async def test_values_are_not_shell_code_and_the_env_is_exactly_the_jobs(
    executor: KubernetesExecutor, job: MakeJob, logs: LocalLogStore, tmp_path: Path
) -> None:
    target = tmp_path / "pwned"
    evil = f"$(touch {target}); `touch {target}` 'q' \"dq\""
    the_job = job('printf "%s\\n" "$x"; env | sort', env={"x": evil})
    report = await executor.wait(await executor.start(the_job))
    assert report.ok, report
    lines = (await log_text(logs, the_job.key)).splitlines()
    assert lines[0] == evil
    assert not target.exists()
    names = {line.split("=", 1)[0] for line in lines[1:] if "=" in line}
    assert not any(n.startswith("_AIHUB_") for n in names), names
    assert {"x", "AI_HUB_TOKEN", "AI_HUB_API_URL", "PATH"} <= names


# ------------------------------------------------------------------------------------------------ outputs


@pytest.mark.parametrize(
    ("decl_type", "command", "message"),
    [
        ("text", "true", "output 'o': file {path} was not written"),
        ("text", "mkdir -p {path}", "output 'o': {path} is not a regular file"),
        (
            "text",
            "head -c 5000 /dev/zero | tr '\\0' a > {path}",
            "output 'o' is 5000 characters; text outputs",
        ),
        ("text", "head -c 2000000 /dev/zero > {path}", "output 'o' is 2000000 bytes; text outputs"),
        ("path", "true", "output 'o': path {path} does not exist"),
    ],
)
async def test_output_rules_are_the_same_as_everywhere(
    executor: KubernetesExecutor, job: MakeJob, tmp_path: Path, decl_type: str, command: str, message: str
) -> None:
    path = tmp_path / "out"
    the_job = job(command.format(path=path), outputs=[OutputDecl("o", str(path), decl_type)])  # type: ignore[arg-type]
    report = await executor.wait(await executor.start(the_job))
    assert report.exit_code == 0
    assert report.error is not None and report.error.startswith(message.format(path=path)), report.error
    assert not report.ok
    assert report.outputs == {}


async def test_a_failed_upload_fails_the_attempt(
    executor: KubernetesExecutor, job: MakeJob, tmp_path: Path, platform: Platform, logs: LocalLogStore
) -> None:
    async def refuse(token: str) -> bool:
        return False

    platform.check_token = refuse
    path = tmp_path / "d"
    the_job = job(f"mkdir {path}", outputs=[OutputDecl("o", str(path), "path")])
    report = await executor.wait(await executor.start(the_job))
    assert report.error == "output 'o': the upload to the platform failed (see the log)"
    assert "aihub: output 'o': upload to" in await log_text(logs, the_job.key)


# ------------------------------------------------------------------------------------------------- inputs


async def test_inputs_are_fetched_and_unpacked_at_their_paths(
    executor: KubernetesExecutor,
    job: MakeJob,
    tmp_path: Path,
    artifacts: LocalArtifactStore,
    platform: Platform,
    logs: LocalLogStore,
) -> None:
    source = tmp_path / "produced"
    (source / "dir" / "nested").mkdir(parents=True)
    (source / "dir" / "nested" / "n.txt").write_text("nested\n")
    (source / "file.txt").write_text("a file\n")
    dir_digest = await stored(artifacts, source / "dir")
    file_digest = await stored(artifacts, source / "file.txt")
    assert archive_kind(artifacts.path(file_digest)) == "file"
    assert archive_kind(artifacts.path(dir_digest)) == "dir"
    dest = tmp_path / "node-fs"  # where the consuming node sees them (same absolute paths as produced)
    (dest / "existing-empty").mkdir(parents=True)
    inputs = [
        ArtifactInput("d", str(dest / "existing-empty"), dir_digest),
        ArtifactInput("f", str(dest / "deep" / "file.txt"), file_digest),
    ]
    the_job = job(
        'cat "$d/nested/n.txt" "$f"; ls -A "$(dirname "$f")"',
        inputs=inputs,
        env={"d": inputs[0].path, "f": inputs[1].path},
    )
    report = await executor.wait(await executor.start(the_job))
    assert report.ok, (report, await log_text(logs, the_job.key))
    assert (await log_text(logs, the_job.key)).splitlines() == ["nested", "a file", "file.txt"]
    downloads = [r for r in platform.requests if r[0] == "GET"]
    assert downloads == [
        ("GET", f"/artifacts/{dir_digest}", TOKEN),
        ("GET", f"/artifacts/{file_digest}", TOKEN),
    ]


async def test_an_input_that_cannot_be_fetched_fails_before_the_command(
    executor: KubernetesExecutor,
    job: MakeJob,
    tmp_path: Path,
    artifacts: LocalArtifactStore,
    platform: Platform,
    logs: LocalLogStore,
) -> None:
    async def refuse(token: str) -> bool:
        return False

    platform.check_token = refuse
    (tmp_path / "f.txt").write_text("x")
    digest = await stored(artifacts, tmp_path / "f.txt")
    target = tmp_path / "in" / "f.txt"
    marker = tmp_path / "command-ran"
    the_job = job(f"touch {marker}", inputs=[ArtifactInput("f", str(target), digest)])
    report = await executor.wait(await executor.start(the_job))
    assert report.exit_code is None
    assert report.error == f"input 'f': cannot fetch it to {target}"
    assert not marker.exists()
    assert f"aihub: input 'f': download of artifact {digest}" in await log_text(logs, the_job.key)


async def test_an_input_missing_from_the_store_fails_without_a_pod(
    executor: KubernetesExecutor, job: MakeJob, emulator: Emulator, logs: LocalLogStore
) -> None:
    the_job = job("true", inputs=[ArtifactInput("f", "/tmp/f", "cd" * 32)])
    handle = await executor.start(the_job)
    report = await executor.wait(handle)
    assert (
        report.error == f"input 'f': artifact {'cd' * 32} is not in the store {executor.artifacts.location}"
    )
    assert emulator.count("POST", "/pods") == 0
    assert f"aihub: {report.error}" in await log_text(logs, the_job.key)
    assert (await executor.describe(handle))["state"].startswith("failed to start: input 'f'")
    assert await executor.events(handle) == []


async def test_reserved_variables_are_refused(
    executor: KubernetesExecutor, job: MakeJob, emulator: Emulator
) -> None:
    report = await executor.wait(await executor.start(job("true", env={"_AIHUB_BB": "/bin/evil"})))
    assert report.error is not None and "reserved" in report.error
    assert emulator.count("POST", "/pods") == 0


# --------------------------------------------------------------------------------------------- logs, stop


async def test_logs_are_archived_and_survive_the_pod(
    make_executor: MakeExecutor,
    kubelet: Kubelet,
    job: MakeJob,
    emulator: Emulator,
    logs: LocalLogStore,
    tmp_path: Path,
) -> None:
    executor = await make_executor()
    out = tmp_path / "t"
    the_job = job(
        f"for i in 1 2 3; do echo line $i; done; echo to-stderr >&2; printf v > {out}; printf 'no newline'",
        outputs=[OutputDecl("t", str(out), "text")],
    )
    handle = await executor.start(the_job)
    report = await executor.wait(handle)
    assert report.ok, report
    assert emulator.pod(NAMESPACE, handle.id) is None  # deleted once archived
    expected = "line 1\nline 2\nline 3\nto-stderr\nno newline"
    assert await log_text(logs, the_job.key) == expected  # marker lines are not archived
    # a fresh executor (a restarted server) still answers for the ended attempt
    again = await make_executor()
    found = await again.find(the_job.key)
    assert found is not None and found.id == handle.id
    assert (await again.wait(found)).outputs["t"].value == "v"
    assert (await again.describe(found))["state"] == "exited with code 0 (Completed)"
    reasons = [e["reason"] for e in await again.events(found)]
    assert reasons[:1] == ["Scheduled"] and "Started" in reasons
    assert await log_text(logs, the_job.key) == expected


async def test_a_log_stream_closed_early_is_followed_again(
    make_executor: MakeExecutor,
    kubelet: Kubelet,
    job: MakeJob,
    emulator: Emulator,
    logs: LocalLogStore,
    tmp_path: Path,
) -> None:
    """Hazard: the end of a log stream is not the end of the container (a kubelet closes idle streams);
    what the node writes afterwards must still be archived, once."""
    executor = await make_executor(eof_grace=0.1)
    flag = tmp_path / "go"
    the_job = job(waiting_for(flag))
    handle = await executor.start(the_job)
    waiter = asyncio.create_task(executor.wait(handle))
    await archived(logs, the_job.key, "ready")  # the first stream is open and has delivered
    streams = emulator.count("GET", f"/pods/{handle.id}/log", follow="True")
    assert streams == 1
    emulator.log(NAMESPACE, handle.id, "main").cut()
    await until_requests(emulator, "GET", f"/pods/{handle.id}/log", streams + 1, follow="True")
    flag.touch()
    report = await waiter
    assert report.ok, report
    assert await log_text(logs, the_job.key) == "ready\nreleased\n"


async def test_stop_deletes_the_pod_with_grace_and_wait_reports_stopped(
    executor: KubernetesExecutor, job: MakeJob, emulator: Emulator, kubelet: Kubelet, logs: LocalLogStore
) -> None:
    the_job = job("trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.05; done")
    handle = await executor.start(the_job)
    waiter = asyncio.create_task(executor.wait(handle))
    await log_contains(emulator, handle.id, b"ready")
    await executor.stop(handle, 5)
    report = await waiter
    assert report.stopped
    assert report.exit_code == 7
    assert not report.ok
    assert emulator.count("DELETE", f"/pods/{handle.id}", gracePeriodSeconds="5") == 1
    assert kubelet.signals[handle.id] == ["SIGTERM"]
    assert emulator.pod(NAMESPACE, handle.id) is None
    assert (await log_text(logs, the_job.key)).splitlines() == ["ready", "got TERM"]


async def test_stop_kills_after_the_grace_period(
    executor: KubernetesExecutor, job: MakeJob, emulator: Emulator, kubelet: Kubelet
) -> None:
    handle = await executor.start(job("trap '' TERM; echo ready; while :; do sleep 0.05; done"))
    await log_contains(emulator, handle.id, b"ready")
    await executor.stop(handle, 0.5)
    report = await executor.wait(handle)
    assert report.stopped
    assert report.exit_code == 137
    assert kubelet.signals[handle.id] == ["SIGTERM", "SIGKILL"]


async def test_stop_of_a_pending_pod(
    executor: KubernetesExecutor, job: MakeJob, emulator: Emulator, kubelet: Kubelet
) -> None:
    kubelet.hold()
    handle = await executor.start(job("echo never"))
    await executor.stop(handle, 5)
    report = await executor.wait(handle)
    assert report.stopped and report.exit_code is None
    assert emulator.pod(NAMESPACE, handle.id) is None


# ---------------------------------------------------------------------------------------------- restarts


async def test_find_reattaches_after_a_restart_and_the_log_has_no_gap_or_duplicate(
    make_executor: MakeExecutor,
    kubelet: Kubelet,
    job: MakeJob,
    emulator: Emulator,
    logs: LocalLogStore,
    tmp_path: Path,
) -> None:
    flag = tmp_path / "go"
    out = tmp_path / "out"
    the_job = job(waiting_for(flag) + f"; echo done > {out}", outputs=[OutputDecl("o", str(out), "text")])
    first = await make_executor()
    handle = await first.start(the_job)
    waiting = asyncio.create_task(first.wait(handle))
    await archived(logs, the_job.key, "ready")
    await first.close()  # the server goes away; the pod keeps running
    assert waiting.cancelled()
    assert await log_text(logs, the_job.key) == "ready\n"

    second = await make_executor()
    assert await second.find(JobKey(1, "step", 2)) is None
    found = await second.find(the_job.key)
    assert found is not None
    assert found.to_json() == handle.to_json()
    flag.touch()
    report = await second.wait(found)
    assert report.ok, report
    assert report.outputs["o"].value == "done"
    assert await log_text(logs, the_job.key) == "ready\nreleased\n"


async def test_starting_an_attempt_whose_pod_exists_adopts_it(
    make_executor: MakeExecutor, kubelet: Kubelet, job: MakeJob, emulator: Emulator, tmp_path: Path
) -> None:
    flag = tmp_path / "go"
    the_job = job(waiting_for(flag))
    handle = await (await make_executor()).start(the_job)
    again = await (await make_executor()).start(the_job)  # a restart between create and record
    assert again.to_json() == handle.to_json()
    assert emulator.count("POST", "/pods") == 2
    flag.touch()


# ----------------------------------------------------------------------------------------------- watches


async def test_one_pod_watch_and_one_event_watch_serve_every_attempt(
    executor: KubernetesExecutor, job: MakeJob, emulator: Emulator
) -> None:
    handles = [await executor.start(job(f"echo {i}", node=f"n{i}")) for i in range(6)]
    reports = await asyncio.gather(*(executor.wait(h) for h in handles))
    assert all(r.ok for r in reports)
    assert emulator.count("GET", f"/namespaces/{NAMESPACE}/pods", watch="True") == 1
    assert emulator.count("GET", f"/namespaces/{NAMESPACE}/events", watch="True") == 1
    watch = next(q for m, p, q in emulator.requests if p.endswith("/pods") and q.get("watch") == "True")
    assert watch["labelSelector"] == "aihub/run"


async def test_a_watch_that_ends_is_resumed_and_an_expired_one_relisted(
    executor: KubernetesExecutor, job: MakeJob, emulator: Emulator, tmp_path: Path
) -> None:
    """Hazard: after the API server closes a watch, or compacts the history it would resume from (410
    Gone), a waiting attempt must still see its pod end."""
    flag = tmp_path / "go"
    handle = await executor.start(job(waiting_for(flag)))
    waiter = asyncio.create_task(executor.wait(handle))
    await log_contains(emulator, handle.id, b"ready")
    assert len(emulator.watches("pods")) == 1

    emulator.drop_watches()  # the server's watch timeout: resumed from the last version seen
    await emulator.until_watches("pods", 2)
    resumed = emulator.watches("pods")[1]
    assert int(resumed["resourceVersion"]) > 0
    assert pod_lists(emulator) == 1

    emulator.compact()
    emulator.drop_watches()  # resuming now gets 410 Gone: list again, then watch from the new list
    await emulator.until_watches("pods", 4)
    expired, fresh = emulator.watches("pods")[2:4]
    assert int(expired["resourceVersion"]) < emulator.compacted_rv <= int(fresh["resourceVersion"])
    assert pod_lists(emulator) == 2  # listed again after the expiry, not after the plain resumption

    flag.touch()
    report = await waiter
    assert report.ok, report


async def test_a_pod_deleted_by_someone_else(
    executor: KubernetesExecutor, job: MakeJob, emulator: Emulator, tmp_path: Path
) -> None:
    handle = await executor.start(job(waiting_for(tmp_path / "never")))
    waiter = asyncio.create_task(executor.wait(handle))
    await log_contains(emulator, handle.id, b"ready")
    emulator.remove_pod(NAMESPACE, handle.id)  # e.g. kubectl delete --force
    report = await waiter
    assert report.exit_code is None
    assert report.error == "the pod was deleted before its command ended"
    assert not report.stopped


# ------------------------------------------------------------------------------------ images, describe


async def test_an_invalid_image_fails_at_once(
    executor: KubernetesExecutor, job: MakeJob, emulator: Emulator
) -> None:
    handle = await executor.start(job("true", image="bad image"))
    report = await executor.wait(handle)
    assert report.exit_code is None
    assert report.error is not None and "InvalidImageName" in report.error
    assert emulator.pod(NAMESPACE, handle.id) is None


async def test_an_image_that_cannot_be_pulled_fails_after_the_grace_period(
    make_executor: MakeExecutor, kubelet: Kubelet, job: MakeJob, emulator: Emulator
) -> None:
    executor = await make_executor(pull_grace=0.2)
    handle = await executor.start(job("true", image="missing/image:1"))
    report = await executor.wait(handle)
    assert report.error is not None
    assert "cannot start after 0.2 s: container main: ImagePullBackOff" in report.error
    assert [e["reason"] for e in await executor.events(handle)][-1] == "Failed"


async def test_describe_and_events_while_running_and_after(
    executor: KubernetesExecutor, job: MakeJob, emulator: Emulator, tmp_path: Path
) -> None:
    flag = tmp_path / "go"
    handle = await executor.start(job(waiting_for(flag), image="python:3.12"))
    waiter = asyncio.create_task(executor.wait(handle))
    await log_contains(emulator, handle.id, b"ready")
    info = await executor.describe(handle)
    assert info["pod"] == handle.id
    assert info["node"] == "sim-node-1"
    assert info["phase"] == "Running"
    assert info["image"] == "python:3.12"
    assert info["resources"]["limits"] == {"cpu": "1000m", "memory": "1024Mi"}
    assert info["state"].startswith("running since ")
    assert info["init"] == "exited with code 0 (Completed)"
    assert info["argv"] == ["sh", "-c", waiting_for(flag)]
    assert "AI_HUB_TOKEN" in info["env"] and not any(n.startswith("_AIHUB") for n in info["env"])
    reasons = [e["reason"] for e in await executor.events(handle)]
    assert reasons[:1] == ["Scheduled"]
    assert {"Pulled", "Created", "Started"} <= set(reasons)
    flag.touch()
    report = await waiter
    assert report.ok
    after = await executor.describe(handle)
    assert after["state"] == "exited with code 0 (Completed)"
    assert after["phase"] == "Succeeded"
    assert [e["reason"] for e in await executor.events(handle)] == reasons


# ------------------------------------------------------------------------------------------ upload route


async def test_store_uploaded_output_repacks_deterministically(
    tmp_path: Path, artifacts: LocalArtifactStore
) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "f").write_text("f")
    upload = tmp_path / "up.tar.gz"
    with tarfile.open(upload, "w:gz") as tar:  # any tar: here with the real owners and times
        tar.add(src, arcname=".")
    digest, size = await store_uploaded_output(upload, "dir", artifacts)
    expected = tmp_path / "expected.tar.gz"
    pack(src, expected)
    assert digest == hashlib.sha256(expected.read_bytes()).hexdigest()
    assert size == expected.stat().st_size

    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo("../escape")
        tar.addfile(info)
    with pytest.raises(Exception, match="refused member"):
        await store_uploaded_output(bad, "dir", artifacts)
