"""The local executor with real processes: exit codes, logs, env, isolation, artifacts, outputs, stop,
restart safety (a real server process killed with SIGKILL) and the container view.

Tests that need a private mount namespace skip, with the probe's reason, where it is unavailable (and fail
when ``CI=true``: the CI machine runs them).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aihub.engine.artifacts import pack, sha256_file
from aihub.engine.executors import launcher as launcher_module
from aihub.engine.executors import local as local_module
from aihub.engine.executors import local_files as local_files_module
from aihub.engine.executors import local_supervisors as supervisors_module
from aihub.engine.executors.base import (
    ArtifactInput,
    ExitReport,
    Handle,
    Job,
    JobKey,
    OutputDecl,
    Resources,
    StorageMount,
)
from aihub.engine.executors.local import (
    IMAGE_NOT_USED,
    SHIM,
    VANISHED,
    LocalExecutor,
    host_path,
    node_realpath,
)
from aihub.engine.executors.local_files import SPARES
from aihub.storage.local import LocalArtifactStore, LocalLogStore
from tests.polling import until

MakeExecutor = Callable[..., Awaitable[LocalExecutor]]
DEADLINE = 20.0


# ------------------------------------------------------------------------------------------------ helpers


@pytest.fixture
async def make_executor(tmp_path: Path) -> AsyncIterator[MakeExecutor]:
    made: list[LocalExecutor] = []

    async def make(isolation: str = "auto", root: Path = tmp_path) -> LocalExecutor:
        executor = LocalExecutor(
            root / "runs",
            LocalArtifactStore(root / "artifacts"),
            LocalLogStore(root / "logs"),
            isolation=isolation,  # type: ignore[arg-type]
        )
        await executor.probe()
        made.append(executor)
        return executor

    yield make
    for executor in made:
        await executor.close()
    _kill_leftovers(tmp_path)


def _kill_leftovers(root: Path) -> None:
    """A failed test must not leave `sleep 1000` behind: kill every supervisor group still running."""
    with os.scandir("/proc") as entries:
        pids = [int(entry.name) for entry in entries if entry.name.isdigit()]
    for pid in pids:
        cmdline = _cmdline(pid)
        if str(SHIM) in cmdline and any(part.startswith(str(root)) for part in cmdline):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture(params=["auto", "unshare", "off"])
async def executor(
    request: pytest.FixtureRequest, make_executor: MakeExecutor, monkeypatch: pytest.MonkeyPatch
) -> LocalExecutor:
    """With a private mount namespace (where available): made by the launcher (a root server) or by the
    unshare(1) chain (a server that is not root, here simulated); and without."""
    if request.param == "unshare":
        without_launcher(monkeypatch)
    return await make_executor("off" if request.param == "off" else "auto")


def without_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a host where the server is not root: namespaces through unshare(1), never the launcher."""
    real_find = supervisors_module._Tools.find
    monkeypatch.setattr(
        supervisors_module._Tools,
        "find",
        staticmethod(lambda: dataclasses.replace(real_find(), launcher=False)),
    )


@pytest.fixture(params=["auto", "unshare"])
async def isolated(
    request: pytest.FixtureRequest, make_executor: MakeExecutor, monkeypatch: pytest.MonkeyPatch
) -> LocalExecutor:
    """A private mount namespace, made both ways (see ``executor``)."""
    if request.param == "unshare":
        without_launcher(monkeypatch)
    executor = await make_executor("auto")
    if not executor.supervisors.isolated:
        message = f"mount isolation unavailable: {executor.supervisors.isolation_reason}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return executor


_keys = iter(range(1, 1_000_000))


def _job(command: str, **kw: Any) -> Job:
    return Job(key=JobKey(1, "node", next(_keys)), argv=["sh", "-c", command], env=kw.pop("env", {}), **kw)


async def _run(executor: LocalExecutor, job: Job) -> ExitReport:
    handle = await executor.start(job)
    async with asyncio.timeout(DEADLINE):
        return await executor.wait(handle)


def _log(executor: LocalExecutor, job: Job) -> str:
    return executor.logs.path(job.key.run_id, job.key.node, job.key.attempt).read_text()


async def _log_match(executor: LocalExecutor, job: Job, pattern: str) -> re.Match[str]:
    return await _file_match(executor.logs.path(job.key.run_id, job.key.node, job.key.attempt), pattern)


async def _file_match(path: Path, pattern: str) -> re.Match[str]:
    return await until(  # type: ignore[no-any-return]
        lambda: path.exists() and re.search(pattern, path.read_text()), f"{pattern!r} in {path}"
    )


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def _gone(pid: int) -> bool:
    """No such process, or a zombie (an orphan's parent may not reap it at once)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat[stat.rindex(b")") + 2 :].split()[0] in (b"Z", b"X")


def _unique_sleep() -> str:
    """A ``sleep`` argument no other process has: how a test finds the process on the host, whatever pid it
    has inside the node's PID namespace."""
    return f"1000.{uuid.uuid4().int % 10**9:09d}"


def _host_pids(sleep: str) -> list[int]:
    found = []
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit() and _cmdline(int(entry.name))[:2] == ["sleep", sleep]:
                found.append(int(entry.name))
    return found


async def _host_pid(sleep: str) -> int:
    await until(lambda: bool(_host_pids(sleep)), f"sleep {sleep} to start")
    return _host_pids(sleep)[0]


def _shared_dir(tmp_path: Path, name: str) -> tuple[Path, StorageMount]:
    """A host directory the node sees at the same path in both modes (a storage under /tmp)."""
    path = tmp_path / name
    path.mkdir()
    path.chmod(0o777)  # nodes run as nobody (the server is root here): a storage must be theirs to write
    return path, StorageMount(name, str(path), host_path=str(path))


# ---------------------------------------------------------------------------------------- path mapping


def test_host_path_maps_the_private_tmp_and_storages(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    storages = [("/data", "/srv/nfs"), ("/data/models", "/srv/models")]
    assert host_path(scratch, "/tmp/x/y", True) == scratch / "tmp" / "x" / "y"
    assert host_path(scratch, "/tmp", True) == scratch / "tmp"
    assert host_path(scratch, "/tmpfoo", True) == Path("/tmpfoo")
    assert host_path(scratch, "/opt/model", True) == Path("/opt/model")
    assert host_path(scratch, "/tmp/a/../../etc/passwd", True) == Path("/etc/passwd")
    assert host_path(scratch, "/data/set/1", True, storages) == Path("/srv/nfs/set/1")
    assert host_path(scratch, "/data/models/m", True, storages) == Path("/srv/models/m")
    assert host_path(scratch, "/data", True, storages) == Path("/srv/nfs")
    assert host_path(scratch, "/tmp/x", False, storages) == Path("/tmp/x")
    with pytest.raises(ValueError, match="not an absolute path"):
        host_path(scratch, "tmp/x", True)


def test_node_realpath_follows_links_inside_the_node(tmp_path: Path) -> None:
    """Hazard: a node's `/tmp/link -> /tmp/real` read on the host would land on the host's /tmp/real."""
    scratch = tmp_path / "scratch"
    (scratch / "tmp" / "dir").mkdir(parents=True)
    os.symlink("/tmp/dir", scratch / "tmp" / "abs")
    os.symlink("dir", scratch / "tmp" / "rel")
    os.symlink("../../tmp/abs/file", scratch / "tmp" / "dir" / "up")
    os.symlink("loop", scratch / "tmp" / "loop")
    assert node_realpath(scratch, "/tmp/abs/f", True) == "/tmp/dir/f"
    assert node_realpath(scratch, "/tmp/rel/f", True) == "/tmp/dir/f"
    assert node_realpath(scratch, "/tmp/dir/up", True) == "/tmp/dir/file"
    assert node_realpath(scratch, "/tmp/missing/x", True) == "/tmp/missing/x"
    assert node_realpath(scratch, "/tmp/abs/f", False) == "/tmp/abs/f"
    with pytest.raises(ValueError, match="too many levels"):
        node_realpath(scratch, "/tmp/loop", True)


# ----------------------------------------------------------------------------------- exit codes and logs


async def test_exit_codes(executor: LocalExecutor, tmp_path: Path) -> None:
    ok = await _run(executor, _job("exit 0"))
    assert (ok.exit_code, ok.error, ok.ok, ok.stopped) == (0, None, True, False)
    assert ok.started_at is not None and ok.finished_at is not None and ok.started_at <= ok.finished_at
    out = "/tmp/out.txt" if executor.supervisors.isolated else str(tmp_path / "out.txt")
    failed = await _run(executor, _job(f"echo x > {out}; exit 3", outputs=[OutputDecl("o", out, "text")]))
    assert (failed.exit_code, failed.error, failed.ok) == (3, None, False)
    assert failed.outputs == {}, "no outputs from a failed attempt"
    missing = await _run(executor, Job(JobKey(1, "node", next(_keys)), ["/no/such/program"], {}))
    assert missing.exit_code == 127


async def test_a_node_never_ends_before_it_started(tmp_path: Path) -> None:
    """The end of a node run without the launcher is its ``exit`` file's mtime, the kernel's coarse clock (a tick,
    a few ms early), and its start the server's fine clock: a node that ended within a tick of its start was
    reported ending before it started (seen once in test_exit_codes[off]). Made deterministic here."""
    started = datetime.now(UTC)
    (tmp_path / "exit").write_text("0\n")
    early = started.timestamp() - 0.004
    os.utime(tmp_path / "exit", (early, early))
    data = {"started_at": started.isoformat(), "outputs": []}
    report = await local_module._report(LocalArtifactStore(tmp_path / "artifacts"), data, tmp_path)
    assert (report.exit_code, report.started_at) == (0, started)
    assert report.finished_at == started


async def test_stdout_and_stderr_go_to_the_log_in_order(executor: LocalExecutor) -> None:
    job = _job("echo one; echo two >&2; echo three; printf 'no newline' >&2")
    assert (await _run(executor, job)).exit_code == 0
    assert _log(executor, job) == "one\ntwo\nthree\nno newline"


async def test_stdin_is_empty(executor: LocalExecutor) -> None:
    job = _job("cat; echo end")
    assert (await _run(executor, job)).exit_code == 0
    assert _log(executor, job) == "end\n"


# ---------------------------------------------------------------------------------------------------- env


async def test_env_values_are_data_never_code(executor: LocalExecutor, tmp_path: Path) -> None:
    shared, storage = _shared_dir(tmp_path, "shared")
    value = f"$(touch {shared}/pwned); `touch {shared}/pwned2`; rm -rf {shared}/keep"
    (shared / "keep").touch()
    job = _job('echo "$VALUE"; echo ${VALUE}', env={"VALUE": value}, storages=[storage])
    assert (await _run(executor, job)).exit_code == 0
    assert _log(executor, job) == f"{value}\n{value}\n"
    assert not (shared / "pwned").exists()
    assert not (shared / "pwned2").exists()
    assert (shared / "keep").exists()


async def test_argv_reaches_the_node_verbatim(executor: LocalExecutor) -> None:
    """The supervisor passes everything after `--` through untouched, even `--` and option-like words."""
    args = ["$(echo no)", "a  b", "--", "-x", "*", "'\"", ""]
    job = Job(JobKey(1, "node", next(_keys)), ["sh", "-c", 'printf "[%s]\\n" "$@"', "sh", *args], {})
    assert (await _run(executor, job)).exit_code == 0
    assert _log(executor, job) == "".join(f"[{a}]\n" for a in args)


async def test_node_sees_exactly_its_env(executor: LocalExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVER_SECRET", "must-not-leak")
    job = Job(JobKey(1, "node", next(_keys)), ["env"], {"GREETING": "hello world", "LANG": "C"})
    assert (await _run(executor, job)).exit_code == 0
    env = dict(line.split("=", 1) for line in _log(executor, job).splitlines())
    assert "must-not-leak" not in _log(executor, job)
    # PWD is set by the supervisor's shell, as by any shell: it is the working directory.
    assert set(env) == {"GREETING", "LANG", "PATH", "HOME", "CUDA_VISIBLE_DEVICES", "PWD"}
    assert env["GREETING"] == "hello world"
    assert env["LANG"] == "C", "the job's value wins over the default"
    assert env["CUDA_VISIBLE_DEVICES"] == "", "no GPU unless one was handed out"
    assert env["PWD"] == "/tmp/workflow_space"
    assert env["HOME"] == (
        "/tmp/workflow_space" if executor.supervisors.isolated else str(executor.work_root / job.key.slug)
    )


async def test_node_gets_its_own_lc_all(executor: LocalExecutor) -> None:
    """The supervisor's tools run with LC_ALL=C; the node's own LC_ALL (or its absence) is restored."""
    with_lc_all = Job(JobKey(1, "node", next(_keys)), ["env"], {"LC_ALL": "POSIX", "LC_ALL_X": "1"})
    assert (await _run(executor, with_lc_all)).exit_code == 0
    env = dict(line.split("=", 1) for line in _log(executor, with_lc_all).splitlines())
    assert (env["LC_ALL"], env["LC_ALL_X"]) == ("POSIX", "1")
    assert not any(name.startswith("_aihub") for name in env)
    empty = Job(JobKey(1, "node", next(_keys)), ["env"], {"LC_ALL": ""})
    await _run(executor, empty)
    assert "LC_ALL=\n" in _log(executor, empty)


async def test_gpus_handed_out_are_visible(executor: LocalExecutor) -> None:
    job = _job('echo "$CUDA_VISIBLE_DEVICES"', resources=Resources(gpu=2, gpu_devices=("1", "3")))
    await _run(executor, job)
    assert _log(executor, job) == "1,3\n"


async def test_reserved_env_names_fail_the_attempt(executor: LocalExecutor) -> None:
    report = await _run(executor, _job("true", env={"_aihub_child": "1"}))
    assert report.exit_code is None
    assert report.error == "environment variable _aihub_child: names starting with _aihub_ are reserved"


async def test_workdir_is_created_and_used(executor: LocalExecutor, tmp_path: Path) -> None:
    workdir = "/tmp/work/dir" if executor.supervisors.isolated else str(tmp_path / "work" / "dir")
    job = _job("pwd", workdir=workdir)
    assert (await _run(executor, job)).exit_code == 0
    assert _log(executor, job) == f"{workdir}\n"


# ----------------------------------------------------------------------------------------------- isolation


async def test_concurrent_nodes_each_have_their_own_tmp(isolated: LocalExecutor, tmp_path: Path) -> None:
    sync, storage = _shared_dir(tmp_path, "sync")
    # Each writes /tmp/same.txt, then waits until the other has written too: both live at the same time.
    script = (
        'echo "$ME" > /tmp/same.txt; touch "$SYNC/$ME"; i=0; '
        'while [ ! -e "$SYNC/$OTHER" ] && [ $i -lt 2000 ]; do i=$((i+1)); sleep 0.01; done; '
        'test -e "$SYNC/$OTHER"'
    )
    jobs = [
        _job(
            script,
            env={"ME": me, "OTHER": other, "SYNC": str(sync)},
            storages=[storage],
            outputs=[OutputDecl("same", "/tmp/same.txt", "text")],
        )
        for me, other in (("a", "b"), ("b", "a"))
    ]
    reports = await asyncio.gather(*(_run(isolated, job) for job in jobs))
    assert [r.exit_code for r in reports] == [0, 0]
    assert [r.outputs["same"].value for r in reports] == ["a", "b"]


async def test_workflow_space_exists_empty_and_writable(isolated: LocalExecutor) -> None:
    job = _job(
        "ls -A /tmp/workflow_space | wc -l; touch /tmp/workflow_space/w && echo writable; ls -A /tmp",
        outputs=[OutputDecl("w", "/tmp/workflow_space/w", "path")],
    )
    report = await _run(isolated, job)
    assert report.ok, report
    assert [line.strip() for line in _log(isolated, job).splitlines()] == ["0", "writable", "workflow_space"]


async def test_storages_are_mounted_read_only_when_asked(isolated: LocalExecutor, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("a,b\n")
    pad = tmp_path / "pad"
    pad.mkdir()
    pad.chmod(0o777)  # the node user's to write
    outside = f"/mnt/aihub-test-{uuid.uuid4().hex[:8]}"
    storages = [
        StorageMount("dataset", f"{outside}/dataset", host_path=str(data), read_only=True),
        StorageMount("pad", "/tmp/pad", host_path=str(pad)),
    ]
    job = _job(
        f"cat {outside}/dataset/train.csv; touch {outside}/dataset/new 2>/dev/null && echo WROTE || echo read-only;"
        " echo hi > /tmp/pad/out && echo written",
        storages=storages,
    )
    try:
        handle = await isolated.start(job)
        report = await isolated.wait(handle)
        desc = await isolated.describe(handle)
    finally:
        for path in (Path(outside, "dataset"), Path(outside)):
            path.rmdir()
    assert report.exit_code == 0
    assert _log(isolated, job) == "a,b\nread-only\nwritten\n"
    assert not (data / "new").exists()
    assert (pad / "out").read_text() == "hi\n", "the storage data survives the removal of the node's /tmp"
    assert f"dataset at {outside}/dataset (read-only)" in desc["isolation"]
    assert "pad at /tmp/pad" in desc["isolation"]


async def test_missing_storage_fails_the_attempt(executor: LocalExecutor, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    report = await _run(executor, _job("true", storages=[StorageMount("gone", missing, host_path=missing)]))
    assert report.exit_code is None
    assert report.error is not None and "storage 'gone'" in report.error


async def test_input_artifacts_are_unpacked_at_the_same_path(executor: LocalExecutor, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "dir" / "sub" / "a.txt").write_text("in a dir\n")
    (src / "file.txt").write_text("a file\n")
    digests = {}
    for name in ("dir", "file.txt"):
        pack(src / name, tmp_path / f"{name}.tar.gz")
        digests[name], _ = await executor.artifacts.put_file(tmp_path / f"{name}.tar.gz")
    base = "/tmp/inputs" if executor.supervisors.isolated else str(tmp_path / "inputs")
    job = _job(
        'cat "$D/sub/a.txt" "$F"',
        env={"D": f"{base}/dir", "F": f"{base}/deep/file.txt"},
        artifacts_in=[
            ArtifactInput("d", f"{base}/dir", digests["dir"]),
            ArtifactInput("f", f"{base}/deep/file.txt", digests["file.txt"]),
        ],
    )
    report = await _run(executor, job)
    assert report.exit_code == 0, _log(executor, job)
    assert _log(executor, job) == "in a dir\na file\n"


async def test_unknown_input_artifact_fails_the_attempt(executor: LocalExecutor) -> None:
    job = _job("true", artifacts_in=[ArtifactInput("x", "/tmp/x", "0" * 64)])
    report = await _run(executor, job)
    assert report.exit_code is None
    assert report.error == f"input 'x': artifact {'0' * 64} is not in the store {executor.artifacts.location}"
    assert _log(executor, job) == f"aihub: {report.error}\n", "the reason is in the log too"


async def test_an_attempt_of_another_data_dir_is_lost_not_followed(
    make_executor: MakeExecutor, tmp_path: Path
) -> None:
    """A run taken over from a worker on another host: its attempt's files and PIDs are not this host's."""
    host_a = await make_executor("off", tmp_path / "host-a")
    host_b = await make_executor("off", tmp_path / "host-b")
    job = _job("sleep 1000")
    handle = await host_a.start(job)
    assert host_b._state(handle) == "started by another engine worker (another data dir or host)"
    await host_b.stop(handle, grace=0)  # nothing: the PID means nothing on another host
    assert host_a._state(handle) == "running"
    report = await host_b.wait(handle)
    assert report.exit_code is None
    assert report.error is not None and report.error.startswith(
        "lost: the attempt ran under another data dir"
    )
    await host_a.stop(handle, grace=0)
    # stopped by its own host: SIGTERM then at once SIGKILL, so the shim may record either (seen under load)
    stopped = await host_a.wait(handle)
    assert stopped.stopped and stopped.exit_code in (137, 143)


# ------------------------------------------------------------------------------------------------- outputs


async def test_outputs_are_collected_after_a_successful_exit(executor: LocalExecutor, tmp_path: Path) -> None:
    base = "/tmp" if executor.supervisors.isolated else str(tmp_path / "node-tmp")
    job = _job(
        'mkdir -p "$B/model/sub" && echo w > "$B/model/sub/weights" && printf "0.93\\n" > "$B/acc.txt"',
        env={"B": base},
        outputs=[OutputDecl("acc", f"{base}/acc.txt", "text"), OutputDecl("model", f"{base}/model", "path")],
    )
    report = await _run(executor, job)
    assert report.ok, report
    assert report.outputs["acc"].value == "0.93"
    model = report.outputs["model"]
    assert model.value == f"{base}/model"
    assert sha256_file(executor.artifacts.path(model.digest or "")) == model.digest
    found = await executor.find(job.key)
    assert found is not None
    again = await executor.wait(found)
    assert again.outputs == report.outputs, "waiting again (after a restart) returns the same outputs"


async def test_output_errors_fail_a_successful_exit(executor: LocalExecutor) -> None:
    never = f"/tmp/workflow_space/never-{uuid.uuid4().hex}"
    report = await _run(executor, _job("true", outputs=[OutputDecl("x", never, "text")]))
    assert report.exit_code == 0
    assert report.error == f"output 'x': file {never} was not written"
    assert not report.ok


async def test_symlinked_output_is_read_as_the_node_sees_it(isolated: LocalExecutor) -> None:
    name = f"aihub-real-{uuid.uuid4().hex}"
    host_decoy = Path("/tmp", name)
    host_decoy.write_text("HOST")
    try:
        job = _job(
            f"echo NODE > /tmp/{name}; ln -s /tmp/{name} /tmp/link",
            outputs=[OutputDecl("v", "/tmp/link", "text")],
        )
        report = await _run(isolated, job)
    finally:
        host_decoy.unlink()
    assert report.outputs["v"].value == "NODE"


async def test_private_tmp_is_removed_after_wait(isolated: LocalExecutor) -> None:
    job = _job("mkdir -p /tmp/workflow_space/big && echo x > /tmp/workflow_space/big/f")
    handle = await isolated.start(job)
    await isolated.wait(handle)
    await isolated.settle()  # the removal runs in the background, off the hand-off path
    scratch = Path(handle.data["scratch"])
    assert not (scratch / "tmp").exists()
    assert (scratch / "exit").exists(), "the small status files stay for a later find()"


async def test_private_tmp_dirs_of_attempts_ending_together_go_in_one_worker_call(
    isolated: LocalExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Removing an ended attempt's private /tmp waits a moment for the ends that follow: one worker thread's
    round trip for them all, not one per node (round eight). A nearly-empty one and a full one alike."""
    calls: list[list[Path]] = []
    remove_all = local_module._remove_all
    monkeypatch.setattr(local_module, "_remove_all", lambda paths: (calls.append(paths), remove_all(paths)))
    monkeypatch.setattr(local_module, "REMOVE_BATCH_SECONDS", 2.0)  # (the three ends come within it)
    jobs = [_job("true"), _job("echo x > /tmp/workflow_space/f"), _job("mkdir /tmp/d && echo y > /tmp/d/g")]
    handles = [await isolated.start(job) for job in jobs]
    async with asyncio.timeout(DEADLINE):
        await asyncio.gather(*(isolated.wait(handle) for handle in handles))
        await isolated.settle()
    tmps = [Path(handle.data["scratch"]) / "tmp" for handle in handles]
    assert sorted(map(sorted, calls)) == [sorted(tmps)]
    assert not any(tmp.exists() for tmp in tmps)
    assert all((Path(handle.data["scratch"]) / "exit").exists() for handle in handles)


# ---------------------------------------------------------------------------------------------------- stop


async def test_stop_terminates_the_whole_process_group(executor: LocalExecutor) -> None:
    sleep = _unique_sleep()
    job = _job(f"sleep {sleep} & wait")
    handle = await executor.start(job)
    grandchild = await _host_pid(sleep)
    started = time.monotonic()
    await executor.stop(handle, grace=10)
    assert time.monotonic() - started < 5, "SIGTERM was enough: no waiting for the grace period"
    report = await executor.wait(handle)
    assert report.stopped and not report.ok
    assert report.exit_code == 128 + signal.SIGTERM
    await until(lambda: _gone(grandchild), "the grandchild to be gone")


async def test_a_stop_while_the_attempt_is_waited_for_is_reported(executor: LocalExecutor) -> None:
    """As the engine does: the wait is under way when the stop comes (the executor knows it asked for the
    stop; it does not look for the ``stop`` file of its own child)."""
    handle = await executor.start(_job(f"sleep {_unique_sleep()}"))
    waiting = asyncio.create_task(executor.wait(handle))
    await until(lambda: (Path(handle.data["scratch"]) / "meta.json").exists(), "the attempt to be in place")
    await executor.stop(handle, grace=10)
    async with asyncio.timeout(DEADLINE):
        report = await waiting
    assert report.stopped and (report.exit_code, report.ok) == (128 + signal.SIGTERM, False)
    ok = await executor.wait(await executor.start(_job("true")))
    assert (ok.stopped, ok.exit_code) == (False, 0)  # the next attempt is not taken for a stopped one


async def test_stop_kills_a_node_that_ignores_sigterm_after_the_grace(executor: LocalExecutor) -> None:
    sleep = _unique_sleep()
    job = _job(f'trap "" TERM; sleep {sleep} & wait')
    handle = await executor.start(job)
    grandchild = await _host_pid(sleep)
    started = time.monotonic()
    await executor.stop(handle, grace=0.5)
    assert time.monotonic() - started >= 0.5, "the grace period is respected"
    report = await executor.wait(handle)
    assert (report.stopped, report.exit_code) == (True, 128 + signal.SIGKILL)
    assert _log(executor, job).endswith("aihub: still running 0.5 s after SIGTERM: killed (SIGKILL)\n")
    await until(lambda: _gone(grandchild), "the grandchild to be gone")


async def test_processes_left_behind_end_with_the_node(executor: LocalExecutor) -> None:
    """Like a container whose main process ended: a background process it started does not linger."""
    sleep, detached = _unique_sleep(), _unique_sleep()
    job = _job(f"sleep {sleep} & (setsid sleep {detached} &) ; echo started")
    report = await _run(executor, job)
    assert report.exit_code == 0 and "started" in _log(executor, job)
    await until(lambda: all(_gone(pid) for pid in _host_pids(sleep)), "the grandchild to be gone")
    if (
        executor.supervisors.pid_namespace
    ):  # also the one in a session of its own, out of the node's process group
        await until(lambda: all(_gone(p) for p in _host_pids(detached)), "the detached one to be gone")
    for pid in _host_pids(detached):  # without a PID namespace it escapes (the container tab warns)
        os.kill(pid, signal.SIGKILL)


async def test_node_may_handle_sigterm_gracefully(executor: LocalExecutor) -> None:
    job = _job('trap "echo cleaning up; exit 0" TERM; echo ready; sleep 1000 & wait')
    handle = await executor.start(job)
    await _log_match(executor, job, "ready")
    await executor.stop(handle, grace=10)
    report = await executor.wait(handle)
    assert (report.exit_code, report.stopped) == (0, True)
    assert "cleaning up" in _log(executor, job)


async def test_stop_is_idempotent_and_harmless_after_the_end(executor: LocalExecutor) -> None:
    job = _job("exit 4")
    handle = await executor.start(job)
    first = await executor.wait(handle)
    await executor.stop(handle, grace=1)
    await executor.stop(handle, grace=1)
    second = await executor.wait(handle)
    assert (first.exit_code, first.stopped) == (second.exit_code, second.stopped) == (4, False)


async def test_stop_right_after_start(executor: LocalExecutor) -> None:
    handle = await executor.start(_job("sleep 1000"))
    await executor.stop(handle, grace=5)
    await executor.stop(handle, grace=5)
    report = await executor.wait(handle)
    assert report.stopped
    assert report.exit_code in (128 + signal.SIGTERM, 128 + signal.SIGKILL)


async def test_a_stop_while_the_supervisor_mounts_is_a_stop(
    make_executor: MakeExecutor, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The SIGTERM of a stop reaches mount(8) too (same group); that must end as stopped (143), not as
    "could not mount" (a CI flake of test_stop_right_after_start under load)."""
    real = supervisors_module._Tools.find()
    if real.mount is None or real.unshare is None:
        pytest.skip("unshare(1) or mount(8) not found")
    slow, mounting = tmp_path / "slow-mount", tmp_path / "mounting"
    wrapper = tmp_path / "mount"
    wrapper.write_text(
        f'#!/bin/sh\nif [ -e "{slow}" ]; then : >"{mounting}"; exec sleep 1000; fi\nexec "{real.mount}" "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setattr(
        supervisors_module._Tools,
        "find",
        staticmethod(lambda: supervisors_module._Tools(real.sh, str(wrapper), real.unshare)),
    )
    executor = await make_executor("auto")  # the probe mounts for real
    if not executor.supervisors.isolated:
        if os.environ.get("CI") == "true":
            pytest.fail(f"mount isolation unavailable: {executor.supervisors.isolation_reason}")
        pytest.skip(f"mount isolation unavailable: {executor.supervisors.isolation_reason}")
    slow.touch()
    handle = await executor.start(_job("sleep 1000"))
    await until(mounting.exists, "the supervisor to be in mount(8)")
    await executor.stop(handle, grace=5)
    report = await executor.wait(handle)
    assert (report.exit_code, report.stopped, report.error) == (128 + signal.SIGTERM, True, None)


async def test_supervisor_killed_alone_reports_vanished(executor: LocalExecutor) -> None:
    sleep = _unique_sleep()
    job = _job(f"sleep {sleep}")
    handle = await executor.start(job)
    node = await _host_pid(sleep)
    os.kill(handle.data["pid"], signal.SIGKILL)
    report = await executor.wait(handle)
    if (Path(handle.data["scratch"]) / "supervisor").exists():
        # in a warm sandbox the launcher started the node itself: that was the node's shell, and its status
        # is recorded (the sleep goes with what the node left)
        assert (report.exit_code, report.error) == (128 + signal.SIGKILL, None)
        await until(lambda: _gone(node), "the node's leftovers to be killed")
        return
    assert (report.exit_code, report.error) == (None, VANISHED)
    if executor.supervisors.pid_namespace:  # its PID namespace ended with it, and took the node along
        await until(lambda: _gone(node), "the node to end with its namespace")
        return
    assert not _gone(node)
    await executor.stop(handle, grace=5)  # the node it left behind is still in the attempt's group
    await until(lambda: _gone(node), "the node left behind to be stopped")


# -------------------------------------------------------------------------------------- restart safety

_SERVER = r"""
import asyncio, json, sys
from pathlib import Path
from aihub.engine.executors.base import Job, JobKey, OutputDecl, StorageMount
from aihub.engine.executors.local import LocalExecutor
from aihub.storage.local import LocalArtifactStore, LocalLogStore

async def main() -> None:
    root, sync, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    executor = LocalExecutor(root / "runs", LocalArtifactStore(root / "artifacts"), LocalLogStore(root / "logs"))
    await executor.probe()
    script = (
        'echo "node $$"; i=0; while [ ! -e "$SYNC/go" ] && [ $i -lt 3000 ]; do i=$((i+1)); sleep 0.01; done; '
        'test -e "$SYNC/go" && echo finished > "$OUT"'
    )
    job = Job(
        JobKey(7, "train", 1), ["sh", "-c", script], {"SYNC": sync, "OUT": out},
        storages=[StorageMount("sync", sync, host_path=sync)], outputs=[OutputDecl("result", out, "text")],
    )
    handle = await executor.start(job)
    print(json.dumps(handle.to_json()), flush=True)
    await asyncio.Event().wait()  # a server, busy, until it is killed

asyncio.run(main())
"""


@pytest.mark.parametrize("finish_before_restart", [False, True], ids=["reattach-running", "collect-finished"])
async def test_nodes_survive_a_killed_server_and_are_reattached(
    tmp_path: Path, make_executor: MakeExecutor, finish_before_restart: bool
) -> None:
    sync = tmp_path / "sync"
    sync.mkdir()
    out = f"/tmp/workflow_space/result-{uuid.uuid4().hex}.txt"
    server = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", _SERVER, str(tmp_path), str(sync), out),
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert server.stdout is not None
    try:
        async with asyncio.timeout(DEADLINE):
            recorded = Handle.from_json(json.loads(await server.stdout.readline()))
    finally:
        # SIGKILL to the server's whole process group, as a terminal's Ctrl-C or a service manager would
        # signal it: no cleanup of any kind, and nothing in the server's group survives.
        os.killpg(server.pid, signal.SIGKILL)
        await server.wait()
    assert server.returncode == -signal.SIGKILL
    node = int((await _file_match(tmp_path / "logs" / "7" / "train" / "1.log", r"node (\d+)"))[1])
    assert not _gone(node), "the node outlived the server"

    executor = await make_executor("auto")
    if finish_before_restart:
        (sync / "go").touch()
        await until(lambda: (Path(recorded.data["scratch"]) / "exit").exists(), "the node to finish")
    found = await executor.find(JobKey(7, "train", 1))
    assert found is not None
    assert found.id == recorded.id
    if finish_before_restart:
        assert (await executor.describe(found))["state"] == "exited with code 0"
    else:
        assert (found.data["pid"], found.data["start_time"]) == (
            recorded.data["pid"],
            recorded.data["start_time"],
        )
        assert (await executor.describe(found))["state"] == "running"

    (sync / "go").touch()
    try:
        async with asyncio.timeout(DEADLINE):
            report, again = await asyncio.gather(executor.wait(found), executor.wait(recorded))
    finally:
        if not executor.supervisors.isolated:
            Path(out).unlink(missing_ok=True)
    assert report.ok, report
    assert report.outputs["result"].value == "finished"
    assert again.outputs == report.outputs, "the handle the server recorded works just as well"


async def test_isolated_attempts_take_scratch_dirs_made_ahead(
    isolated: LocalExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hand-off renames a spare scratch dir (private /tmp, workflow_space) into place instead of making
    one, and a new spare is made in the background; spares left by an earlier server go at the probe. (Nodes
    in new namespaces each: a warm sandbox makes its own, ``test_warm_sandbox.py``.)"""
    monkeypatch.setattr(launcher_module, "WARM_SANDBOXES", False)
    await isolated.close()
    await isolated.probe()
    assert not isolated.supervisors.sandboxes
    spare_dir = isolated.files.spare_dir
    await isolated.settle()
    ready = set(spare_dir.iterdir())
    assert len(ready) == SPARES
    job = _job("stat -c '%a %U' /tmp /tmp/workflow_space; ls -A /tmp/workflow_space | wc -l")
    handle = await isolated.start(job)
    assert (await isolated.wait(handle)).exit_code == 0
    user = "nobody" if isolated.supervisors.node_user == (65534, 65534) else None
    lines = _log(isolated, job).split("\n")
    assert lines[0].split()[0] == "1777" and lines[1].split()[0] == "755" and lines[2].strip() == "0"
    if user is not None:
        assert lines[1].split()[1] == user
    await isolated.settle()
    now = set(spare_dir.iterdir())
    assert len(now) == SPARES and len(ready - now) == 1, "one taken, one made"
    # another server's, still running (the parent of this test's process); another executor's of this process
    # (engine workers side by side); and those of servers now gone
    others = spare_dir.parent
    running = others / f"{local_files_module._process_tag(os.getppid())}-0a1b2c3d"
    sibling = others / f"{local_files_module._process_tag(os.getpid())}-5e6f7a8b"
    gone = [others / "1-999999999999-0a1b2c3d", others / "1-999999999999", others / "not-a-server"]
    for path in (running, sibling, *gone):  # (pid 1 did not start so late)
        (path / "spare").mkdir(parents=True)
    await isolated.probe()
    await isolated.settle()
    assert len(set(spare_dir.iterdir())) == SPARES, "its own, made again"
    assert (running / "spare").is_dir() and (sibling / "spare").is_dir()
    assert not any(path.exists() for path in gone)


async def test_an_attempts_files_are_made_before_its_start(executor: LocalExecutor) -> None:
    """Before the supervisor starts: meta.json with the start the handle has (what find() reads after a
    restart), the log's directory with the image's line, the private /tmp with its workflow_space."""
    job = _job("ls -A /tmp; echo ran", image="python:3.11-slim")
    handle = await executor.start(job)
    scratch = Path(handle.data["scratch"])
    meta = json.loads((scratch / "meta.json").read_text())
    assert meta["started_at"] == handle.data["started_at"]
    assert (meta["key"], meta["argv"], meta["pid"]) == (handle.data["key"], job.argv, None)
    report = await executor.wait(handle)
    assert report.exit_code == 0 and report.started_at == datetime.fromisoformat(meta["started_at"])
    lines = _log(executor, job).splitlines()
    assert lines[0] == f"aihub: {IMAGE_NOT_USED} (image python:3.11-slim)"
    assert lines[-1] == "ran"
    if executor.supervisors.isolated:
        assert lines[1:] == ["workflow_space", "ran"]
    found = await executor.find(job.key)
    assert found is not None and found.data["started_at"] == handle.data["started_at"]


async def test_a_launch_refused_before_the_spawn_is_recorded(executor: LocalExecutor) -> None:
    """A node refused before its supervisor starts (a reserved env name): its failure is recorded where
    wait() and find() look."""
    job = _job("true", env={"_aihub_x": "1"})
    handle = await executor.start(job)
    report = await executor.wait(handle)
    assert report.error is not None and "reserved" in report.error
    assert "reserved" in _log(executor, job)
    assert await executor.find(job.key) is not None


async def test_find_knows_only_started_attempts(make_executor: MakeExecutor) -> None:
    executor = await make_executor()
    assert await executor.find(JobKey(1, "never", 1)) is None


async def test_starting_the_same_attempt_again_does_not_run_it_twice(make_executor: MakeExecutor) -> None:
    """Hazard: a restart between start and recording the handle makes the scheduler start it again."""
    executor = await make_executor()
    job = _job("echo ran; sleep 1000")
    first = await executor.start(job)
    await _log_match(executor, job, "ran")
    second = await executor.start(job)
    assert second.data["pid"] == first.data["pid"]
    await executor.stop(second, grace=5)
    report = await executor.wait(first)
    third = await executor.start(job)  # after the end, too
    assert (await executor.wait(third)).exit_code == report.exit_code == 128 + signal.SIGTERM
    assert _log(executor, job).count("ran") == 1


# ---------------------------------------------------------------------------------------- container view


async def test_describe_shows_the_process_and_never_env_values(executor: LocalExecutor) -> None:
    job = _job("echo ready; sleep 1000", env={"AI_HUB_TOKEN": "s3cr3t-token-value"})
    handle = await executor.start(job)
    await _log_match(executor, job, "ready")
    running = await executor.describe(handle)
    assert running["state"] == "running"
    assert running["pid"] == handle.data["pid"] == running["pgid"]
    assert running["argv"] == ["sh", "-c", "echo ready; sleep 1000"]
    assert running["env"] == ["AI_HUB_TOKEN"]
    assert running["host"] and running["started_at"]
    if executor.supervisors.isolated:
        assert running["isolation"].startswith("mount namespace: private /tmp, /tmp/workflow_space")
    else:
        assert running["isolation"].startswith("none (")
    await executor.stop(handle, grace=5)
    await executor.wait(handle)
    ended = await executor.describe(handle)
    assert ended["state"] == "exited with code 143 (stopped)"
    assert "s3cr3t-token-value" not in json.dumps([running, ended, handle.to_json()])
    assert await executor.events(handle) == []


async def test_isolation_off_says_so(make_executor: MakeExecutor) -> None:
    executor = await make_executor("off")
    assert not executor.supervisors.isolated
    handle = await executor.start(_job("true"))
    isolation = (await executor.describe(handle))["isolation"]
    assert isolation.startswith("none (disabled by configuration (AIHUB_LOCAL_ISOLATION=off)). WARNING: ")
    assert "nodes run as root" in isolation or "nodes run as the server's user" in isolation
    await executor.wait(handle)


async def test_unavailable_isolation_warns_once_and_falls_back(
    make_executor: MakeExecutor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_find = supervisors_module._Tools.find

    def without_unshare() -> supervisors_module._Tools:
        tools = real_find()
        return supervisors_module._Tools(tools.sh, tools.mount, None)

    monkeypatch.setattr(supervisors_module._Tools, "find", staticmethod(without_unshare))
    with caplog.at_level(logging.WARNING, logger=local_module.__name__):
        executor = await make_executor("auto")
        report = await _run(executor, _job("test -d /tmp/workflow_space"))
    assert not executor.supervisors.isolated
    assert report.exit_code == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0] == (
        "SECURITY: local executor: no mount namespace (unshare(1) or mount(8) not found): nodes share this "
        "host's /tmp, see the data dir and cannot mount data storages"
    )
    assert len(warnings) == 2 and warnings[1].startswith("SECURITY: local executor: nodes run as ")


def test_isolation_ways_prefer_a_pid_namespace_then_the_launcher() -> None:
    """A kernel without the launcher's /proc (before 6.15) must still get a PID namespace from unshare(1)
    rather than the launcher without one; a server that is not root tries its user namespace only."""
    tools = supervisors_module._Tools("/bin/sh", "/bin/mount", "/bin/unshare", "/bin/setpriv", launcher=True)
    ways = [
        ("launcher" if w.launcher else " ".join(w.unshare[1:]), w.pid_namespace)
        for w in supervisors_module._isolation_ways(tools, root=True)
    ]
    mount, mapped = "--mount --propagation private", "--mount --map-root-user --propagation private"
    pid = " --pid --fork --kill-child --mount-proc"
    assert ways == [
        ("launcher", True),
        (mount + pid, True),
        ("launcher", False),
        (mount, False),
        (mapped + pid, True),
        (mapped, False),
    ]
    user = dataclasses.replace(tools, launcher=False)
    assert [w.unshare[1:] for w in supervisors_module._isolation_ways(user, root=False)] == [
        tuple((mapped + pid).split()),
        tuple(mapped.split()),
    ]


def test_setpriv_gets_names_only_where_they_stand_for_the_same_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """setpriv looks each value up as a name first (a number goes through every NSS module, a quarter of its
    CPU): a name is passed only where it is found as that very id, else the number."""
    import grp
    import pwd

    users = {1000: "dup", 1001: "carol"}  # "dup" is also the name of uid 999, listed first
    groups = {2000: "staff"}
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: _entry(pw_name=users[uid]))
    monkeypatch.setattr(pwd, "getpwnam", lambda name: _entry(pw_uid={"dup": 999, "carol": 1001}[name]))
    monkeypatch.setattr(grp, "getgrgid", lambda gid: _entry(gr_name=groups[gid]))
    monkeypatch.setattr(grp, "getgrnam", lambda name: _entry(gr_gid={"staff": 2000}[name]))
    supervisors_module._setpriv_ids.cache_clear()
    try:
        assert supervisors_module._setpriv_ids(1001, 2000) == ("carol", "staff")
        assert supervisors_module._setpriv_ids(1000, 2001) == ("1000", "2001")  # a name of another id; none
    finally:
        supervisors_module._setpriv_ids.cache_clear()


def _entry(**fields: Any) -> Any:
    return type("Entry", (), fields)()


def test_a_kernel_that_forbids_user_namespaces_is_named_in_the_reason(tmp_path: Path) -> None:
    """A server that is not root on Ubuntu 23.10+ (AppArmor) or an older Debian kernel gets no isolation; the
    warning says which switch forbids it, not only unshare(1)'s error."""
    assert supervisors_module.user_namespace_restriction(tmp_path) == ""  # no such sysctl: nothing to say
    (tmp_path / "apparmor_restrict_unprivileged_userns").write_text("0\n")
    (tmp_path / "unprivileged_userns_clone").write_text("1\n")
    assert supervisors_module.user_namespace_restriction(tmp_path) == ""  # both allow it
    (tmp_path / "apparmor_restrict_unprivileged_userns").write_text("1\n")
    hint = supervisors_module.user_namespace_restriction(tmp_path)
    assert "kernel.apparmor_restrict_unprivileged_userns=1" in hint and "run the server as root" in hint
    (tmp_path / "apparmor_restrict_unprivileged_userns").write_text("0\n")
    (tmp_path / "unprivileged_userns_clone").write_text("0\n")
    assert "kernel.unprivileged_userns_clone=0" in supervisors_module.user_namespace_restriction(tmp_path)


async def test_a_server_that_is_not_root_says_why_it_gets_no_isolation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe's reason (the start-up warning, every node's container tab) carries the hint."""
    sysctl = tmp_path / "sysctl"
    sysctl.mkdir()
    (sysctl / "apparmor_restrict_unprivileged_userns").write_text("1\n")
    monkeypatch.setattr(supervisors_module, "SYSCTL", sysctl)
    monkeypatch.setattr(supervisors_module.os, "geteuid", lambda: 1000)
    tools = supervisors_module._Tools("/bin/sh", None, None, None, launcher=False)  # no way can work
    sup = supervisors_module.Supervisors(tmp_path / "runs", isolation="auto", run_as="auto", private_paths=[])
    reason = await sup._probe_isolation(tools)
    assert reason.startswith("unshare(1) or mount(8) not found; this kernel forbids user namespaces")
