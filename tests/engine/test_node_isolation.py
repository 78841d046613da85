"""A node cannot reach the platform (issue 11, points 1 and 3), with the local executor's defaults.

Each attack here worked before: a node printed ``uid=0``, read the server's environment from ``/proc``, listed
other users' logs and the database under the data dir, and left ``setsid sleep`` running after its run.
These tests need what the default gives a root server on Linux (mount and PID namespaces, setpriv); on a host
without them they skip locally and fail in CI, like the other isolation tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from aihub.engine.executors import launcher as launcher_module
from aihub.engine.executors.base import ExitReport, Job, JobKey, StorageMount
from aihub.engine.executors.local import LocalExecutor
from aihub.engine.executors.local_supervisors import _base_env, _ended, _Tools
from aihub.runtime import build_executor
from aihub.settings import Settings
from aihub.storage.local import build_storage
from tests.engine.test_local_executor import _gone, _host_pid, _host_pids, _unique_sleep
from tests.polling import until

DEADLINE = 30.0
_keys = iter(range(1, 1_000_000))


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir outside /tmp (a node's /tmp is private anyway), as a real installation has."""
    path = Path(tempfile.mkdtemp(prefix="aihub-isolation-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def _isolated_executor(data_dir: Path, way: str, monkeypatch: pytest.MonkeyPatch) -> LocalExecutor:
    """The executor exactly as the runtime builds it from default settings, nodes started ``way``: through the
    launcher, in its warm sandboxes (the default), or in new namespaces for each node, whose /proc the launcher
    mounts (``pidns=``, Linux 6.15 and later) or leaves to the supervisor (as on a kernel without that
    option); or as an ``unshare(1)`` chain (no launcher: a server that is not root, or where the launcher
    cannot work)."""
    monkeypatch.setattr(launcher_module, "PROC_BY_SUPERVISOR", way == "proc-by-supervisor")
    monkeypatch.setattr(launcher_module, "WARM_SANDBOXES", way == "sandbox")
    if way == "unshare":
        found = _Tools.find
        monkeypatch.setattr(
            _Tools, "find", staticmethod(lambda: dataclasses.replace(found(), launcher=False))
        )
    settings = Settings(data_dir=data_dir)
    settings.ensure_dirs()
    executor = build_executor(settings, *build_storage(settings))
    assert isinstance(executor, LocalExecutor)
    await executor.probe()
    supervisors = executor.supervisors
    if os.geteuid() != 0 or not supervisors.isolated or not supervisors.pid_namespace:
        message = f"no root with mount and PID namespaces here: {supervisors.weaknesses}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    assert (supervisors.launcher is None) == (way == "unshare"), "the way asked for is the way taken"
    return executor


PER_NODE_WAYS = ["proc-by-launcher", "proc-by-supervisor"]
LAUNCHER_WAYS = ["sandbox", *PER_NODE_WAYS]


@pytest.fixture(params=[*LAUNCHER_WAYS, "unshare"])
async def executor(
    data_dir: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[LocalExecutor]:
    """Each test three ways (see :func:`_isolated_executor`); tests of the launcher itself take
    :data:`LAUNCHER_WAYS` only (``parametrize(..., indirect=True)``)."""
    executor = await _isolated_executor(data_dir, request.param, monkeypatch)
    yield executor
    await executor.close()


def _job(command: str, **kw: object) -> Job:
    return Job(key=JobKey(7, "node", next(_keys)), argv=["sh", "-c", command], env={}, **kw)  # type: ignore[arg-type]


async def _run(executor: LocalExecutor, command: str) -> tuple[ExitReport, str]:
    job = _job(command)
    handle = await executor.start(job)
    async with asyncio.timeout(DEADLINE):
        report = await executor.wait(handle)
    return report, executor.logs.path(7, "node", job.key.attempt).read_text()


async def test_a_node_runs_as_nobody_without_a_way_back(executor: LocalExecutor) -> None:
    report, log = await _run(executor, "id -u; id -g; id -G; grep NoNewPrivs /proc/self/status")
    assert report.exit_code == 0, log
    assert log.split()[:4] == ["65534", "65534", "65534", "NoNewPrivs:"] and log.split()[4] == "1"
    assert "runs as uid 65534" in executor.supervisors.isolation_text(_job("true"))


async def test_a_node_sees_neither_the_server_nor_its_environment(
    executor: LocalExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("AIHUB_ADMIN_PASSWORD", secret)  # in this (the server's) process only
    report, log = await _run(
        executor,
        "for p in /proc/[0-9]*; do tr '\\0' ' ' <$p/cmdline; echo; done; "
        "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; env",
    )
    assert report.exit_code == 0, log
    assert secret not in log
    assert "pytest" not in log and "AIHUB_" not in log
    own = [line for line in log.splitlines() if line.strip() and "=" not in line]
    assert len(own) <= 4, own  # the supervisor, the node's shell and its helpers: nothing of the host


async def test_a_node_s_proc_is_its_own_namespace_s(executor: LocalExecutor) -> None:
    """PID 1 is the node's supervisor (or the warm sandbox it runs in), and the node's /proc shows only its own
    namespace's few processes, whoever mounted it."""
    report, log = await _run(
        executor, "tr '\\0' ' ' </proc/1/cmdline; echo; ls /proc | grep -c '^[0-9]'; grep -c . /proc/mounts"
    )
    assert report.exit_code == 0, log
    first, processes, _ = log.splitlines()
    launcher = executor.supervisors.launcher
    sandbox = launcher is not None and launcher_module.WARM_SANDBOXES
    assert ("launcher.py" if sandbox else "shim.sh") in first, log
    assert int(processes) <= 5, log  # PID 1, the supervisor, the node's shell and its helpers
    if launcher is not None:
        assert launcher.pid is not None
        cmdline = Path(f"/proc/{launcher.pid}/cmdline").read_bytes()
        # the way asked for is the way taken
        assert (b"--proc-by-supervisor" in cmdline) == launcher_module.PROC_BY_SUPERVISOR
        assert (b"--warm-sandboxes" in cmdline) == launcher_module.WARM_SANDBOXES


async def test_the_data_dir_is_out_of_reach(executor: LocalExecutor, data_dir: Path) -> None:
    (data_dir / "aihub.sqlite3").write_text("the database")
    (data_dir / "logs" / "99").mkdir(parents=True)
    (data_dir / "logs" / "99" / "other-user.log").write_text("someone else's log")
    report, log = await _run(
        executor,
        f"ls -A {data_dir}; cat {data_dir}/aihub.sqlite3 {data_dir}/logs/99/other-user.log; "
        f"touch {data_dir}/x && echo WROTE; ls {data_dir}/runs",
    )
    assert report.exit_code != 0
    assert "the database" not in log and "someone else's log" not in log and "WROTE" not in log
    assert f"hidden: {data_dir}" in executor.supervisors.isolation_text(_job("true"))


async def test_a_private_dir_made_after_the_first_start_is_hidden_from_the_next_node(
    executor: LocalExecutor, data_dir: Path
) -> None:
    """A private path is looked for again at each start until it is a directory (one found is not looked for
    again): one made while the server runs is hidden from the nodes started after."""
    later = Path(tempfile.mkdtemp(prefix="aihub-private-", dir="/var/tmp")) / "made-later"
    later.parent.chmod(0o755)  # (readable by the node user, but for the hiding)
    try:
        executor.supervisors.private_paths.append(later)
        report, log = await _run(executor, f"test -e {later} || echo ABSENT; ls -A {data_dir} | wc -l")
        assert report.exit_code == 0 and log.split() == ["ABSENT", "0"], log
        later.mkdir(mode=0o755)
        (later / "secret").write_text("made later")
        (later / "secret").chmod(0o644)
        show = f"echo entries $(ls -A {later} | wc -l) $(ls -A {data_dir} | wc -l); cat {later}/secret"
        report, log = await _run(executor, show)
        assert "made later" not in log and "entries 0 0" in log, log  # the data dir still hidden too
        assert report.exit_code != 0, log
    finally:
        shutil.rmtree(later.parent, ignore_errors=True)


async def test_a_module_build_in_the_hidden_data_dir_still_runs(
    executor: LocalExecutor, data_dir: Path
) -> None:
    """The local build of a module lives under the data dir (hidden, and 0700 like the /root it may be in): the
    node gets it at /opt/aihub/module-build, its entrypoint and working dir following."""
    data_dir.chmod(0o700)
    context = data_dir / "builds" / "hash-file" / "1"
    (context / "app").mkdir(parents=True)
    (context / "app" / "main.sh").write_text('echo "in $(pwd) as $(id -u): $1"\n')
    job = Job(
        key=JobKey(7, "module", next(_keys)),
        argv=["sh", str(context / "app" / "main.sh"), "--x=1"],
        env={},
        workdir=str(context / "app"),
        storages=[StorageMount(name="module-build", path=str(context), read_only=True)],
    )
    handle = await executor.start(job)
    async with asyncio.timeout(DEADLINE):
        report = await executor.wait(handle)
    log = executor.logs.path(7, "module", job.key.attempt).read_text()
    assert report.exit_code == 0, log
    assert log.strip() == "in /opt/aihub/module-build/app as 65534: --x=1"


async def test_processes_a_node_detaches_end_with_it(executor: LocalExecutor) -> None:
    sleep = _unique_sleep()
    report, log = await _run(
        executor, f"setsid sleep {sleep} & nohup setsid sh -c 'sleep {sleep}' & echo left"
    )
    assert report.exit_code == 0 and "left" in log
    await until(lambda: not _running(sleep), "the detached sleeps to be gone")


async def test_processes_a_node_detaches_end_with_a_stop(executor: LocalExecutor) -> None:
    sleep = _unique_sleep()
    job = _job(f"setsid sleep {sleep} & sleep {sleep}")
    handle = await executor.start(job)
    await until(lambda: len(_running(sleep)) == 2, "both sleeps to start")
    await executor.stop(handle, grace=5)
    async with asyncio.timeout(DEADLINE):
        assert (await executor.wait(handle)).stopped
    await until(lambda: not _running(sleep), "the detached sleep to be gone")


def _running(sleep: str) -> list[int]:
    return [pid for pid in _host_pids(sleep) if not _gone(pid)]


async def test_run_as_is_configurable_and_never_root(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, local_run_as="server")
    server_user = build_executor(settings, *build_storage(settings))
    assert isinstance(server_user, LocalExecutor)
    await server_user.probe()
    await server_user.close()
    assert server_user.supervisors.node_user is None
    assert any("AIHUB_LOCAL_RUN_AS=server" in weakness for weakness in server_user.supervisors.weaknesses)
    assert "WARNING: " in server_user.supervisors.isolation_text(_job("true"))
    for bad, message in (
        ("0", "may not run as root"),
        ("no-such-user-x", "there is no user 'no-such-user-x'"),
    ):
        settings = Settings(data_dir=data_dir, local_run_as=bad)
        executor = build_executor(settings, *build_storage(settings))
        assert isinstance(executor, LocalExecutor)
        if os.geteuid() != 0:
            pytest.skip("needs root")
        with pytest.raises((ValueError, RuntimeError), match=message):
            await executor.probe()
        assert executor.supervisors.launcher is None, "a refused probe leaves no launcher running"


async def test_a_node_inherits_no_ignored_signal_and_no_descriptor(executor: LocalExecutor) -> None:
    """Hazard: the launcher is a Python process, which ignores SIGPIPE and SIGXFSZ (and, as the launcher,
    SIGINT); an ignored signal survives exec, so `yes | head` would spin on EPIPE. Its pipes to the server, and
    the gate the supervisor waits on, must not reach the node either."""
    report, log = await _run(executor, "grep -E '^Sig(Ign|Blk)' /proc/self/status; ls /proc/self/fd")
    assert report.exit_code == 0, log
    blocked, ignored, *fds = log.split("\n")[:-1]
    assert int(blocked.split()[1], 16) == 0, log
    # none of the standard signals (glibc's posix_spawn leaves its own internal 32 and 33 ignored, which no
    # glibc program can change or use anyway)
    assert int(ignored.split()[1], 16) & (1 << 31) - 1 == 0, log
    assert fds == ["0", "1", "2", "3"], log  # (3: ls's own, reading the directory)


def test_a_node_inherits_no_descriptor_of_a_server_on_uvloop(data_dir: Path) -> None:
    """``aihub serve`` runs on uvloop, whose spawn (libuv's) closes no descriptor: the launcher it started held
    the server's inheritable descriptors and the other ends of its own pipes, and passed them on to every node
    (a node left running held the server's stdout, and a test waiting for that to close hung). Here the server
    side runs on uvloop with an inheritable descriptor open; the node sees its three standard ones only."""
    import uvloop

    async def node_fds() -> tuple[ExitReport, str] | str:
        settings = Settings(data_dir=data_dir)
        settings.ensure_dirs()
        executor = build_executor(settings, *build_storage(settings))
        assert isinstance(executor, LocalExecutor)
        await executor.probe()
        try:
            if (
                os.geteuid() != 0
                or not executor.supervisors.isolated
                or not executor.supervisors.pid_namespace
            ):
                return f"no root with mount and PID namespaces here: {executor.supervisors.weaknesses}"
            return await _run(executor, "ls /proc/self/fd")
        finally:
            await executor.close()

    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    try:
        result = uvloop.run(node_fds())
    finally:
        os.close(read_end)
        os.close(write_end)
    if isinstance(result, str):
        if os.environ.get("CI") == "true":
            pytest.fail(result)
        pytest.skip(result)
    report, log = result
    assert report.exit_code == 0, log
    assert log.split() == ["0", "1", "2", "3"], log  # (3: ls's own, reading the directory)


async def test_mounts_are_read_only_nosuid_nodev_and_stay_in_the_node(
    executor: LocalExecutor, data_dir: Path
) -> None:
    """The hidden data dir (like a read-only storage) is ro,nosuid,nodev inside the node; the /tmp bind and the
    node's own /proc are private to it: nothing shows in the host's mount table, during or after."""

    def host_tmp() -> list[str]:
        return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if " /tmp " in line]

    before = host_tmp()
    report, log = await _run(
        executor, f"grep ' {data_dir} ' /proc/self/mountinfo; grep -c ' /tmp ' /proc/self/mountinfo"
    )
    assert report.exit_code == 0, log
    hidden, tmps = log.splitlines()
    assert {"ro", "nosuid", "nodev"} <= set(hidden.split()[5].split(",")), hidden
    assert int(tmps) >= 1
    assert str(data_dir) not in Path("/proc/self/mountinfo").read_text()
    assert host_tmp() == before


async def test_storages_with_blanks_backslashes_and_chinese_in_their_paths_are_mounted_as_given(
    executor: LocalExecutor, data_dir: Path
) -> None:
    """Each bind's paths arrive whole, whichever way: as system-call arguments (the launcher), or as fstab(5)
    fields escaped for the supervisor's one ``mount --all`` (a space or a tab would split a field there, a
    backslash start an escape), in order, read-only where asked."""
    odd = "数据 集\tA\\b\nc"
    outside = data_dir.parent / f"aihub-odd-{uuid.uuid4().hex}"
    source, shelf = outside / f"in {odd}", outside / f"ro {odd}"
    for path in (source, shelf):
        path.mkdir(parents=True)
        path.chmod(0o777)  # nodes run as nobody (the server is root here)
    (shelf / "book").write_text("read me")
    storages = [
        StorageMount("rw", f"/tmp/w {odd}", host_path=str(source)),
        StorageMount("ro", f"/tmp/r {odd}", host_path=str(shelf), read_only=True),
    ]
    try:
        job = _job('cd "$W" && cat "$R/book" > copy && ! touch "$R/x" 2>/dev/null', storages=storages)
        job = dataclasses.replace(job, env={"W": f"/tmp/w {odd}", "R": f"/tmp/r {odd}"})
        handle = await executor.start(job)
        async with asyncio.timeout(DEADLINE):
            report = await executor.wait(handle)
        log = executor.logs.path(7, "node", job.key.attempt).read_text()
        assert report.exit_code == 0, log
        assert (source / "copy").read_text() == "read me"
        assert sorted(p.name for p in shelf.iterdir()) == ["book"]
    finally:
        shutil.rmtree(outside, ignore_errors=True)


@pytest.mark.parametrize("under_tmp", [True, False], ids=["under-tmp", "elsewhere"])
async def test_a_storage_inside_another_storage_is_seen_there(
    executor: LocalExecutor, data_dir: Path, under_tmp: bool
) -> None:
    """``/data`` and ``/data/models``: the inner one is bound onto the outer one's mount, where the node looks
    (at the outer one's source it was under that mount, out of sight: the node found the outer's empty dir)."""
    outside = data_dir.parent / f"aihub-nested-{uuid.uuid4().hex}"
    outer, inner = outside / "outer", outside / "inner"
    for path in (outer, inner):
        path.mkdir(parents=True)
        path.chmod(0o777)  # nodes run as nobody (the server is root here)
    (inner / "model").write_text("weights")
    where = "/tmp/data" if under_tmp else str(outside / "seen")
    storages = [
        StorageMount("data", where, host_path=str(outer)),
        StorageMount("models", f"{where}/models", host_path=str(inner), read_only=True),
    ]
    try:
        job = _job(f"cat {where}/models/model && ! touch {where}/models/x 2>/dev/null && touch {where}/mine")
        handle = await executor.start(dataclasses.replace(job, storages=storages))
        async with asyncio.timeout(DEADLINE):
            report = await executor.wait(handle)
        log = executor.logs.path(7, "node", job.key.attempt).read_text()
        assert (report.exit_code, log) == (0, "weights"), log
        assert (outer / "mine").exists() and not (inner / "x").exists()
    finally:
        shutil.rmtree(outside, ignore_errors=True)


async def test_a_bind_that_cannot_be_made_is_a_set_up_error_with_the_reason_in_the_log(
    executor: LocalExecutor, data_dir: Path
) -> None:
    supervisors = executor.supervisors
    scratch = data_dir / "runs" / f"bind-{uuid.uuid4().hex}"
    (scratch / "tmp").mkdir(parents=True)
    binds = [
        (str(data_dir / "gone"), str(scratch / "tmp" / "x"), "rw"),
        (str(scratch / "tmp"), "/tmp", "tree"),
    ]
    child, _ = await supervisors.launch(scratch, scratch / "log", "/", binds, ["true"], _base_env("/"))
    async with asyncio.timeout(DEADLINE):
        await _ended(child)
    status = (scratch / "exit").read_text().strip()
    assert status.startswith("error: could not mount ") and status.endswith(" (see the log)"), status
    assert f"{scratch}/tmp/x" in (scratch / "log").read_text()  # which one, and why (mount's or the kernel's)


@pytest.mark.parametrize("executor", LAUNCHER_WAYS, indirect=True)
async def test_the_launcher_puts_a_plain_attempts_files_in_place_itself(
    executor: LocalExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node with nothing to unpack and the default working dir: the launcher renames a spare into place and
    writes ``meta.json`` (no trip to a worker thread); the attempt is found again from it, as ever. One that
    needs more file work gets it from the server first."""
    prepared: list[str] = []
    prepare = executor.files.prepare_attempt

    def spied(job: Job, scratch: Path) -> object:
        prepared.append(job.argv[-1])
        return prepare(job, scratch)

    monkeypatch.setattr(executor.files, "prepare_attempt", spied)
    made_dirs: list[str] = []  # the log store makes a log's directory in path(): a file-system call
    path = executor.logs.path
    monkeypatch.setattr(executor.logs, "path", lambda *key: made_dirs.append(key[1]) or path(*key))
    await executor.settle()  # (the spares made at the probe)
    job = dataclasses.replace(_job("pwd"), key=JobKey(7, f"fresh_{uuid.uuid4().hex[:8]}", 1))
    handle = await executor.start(job)
    async with asyncio.timeout(DEADLINE):
        report = await executor.wait(handle)
    log = executor.logs.location(7, job.key.node, 1).read_text()  # its directory made by the launcher
    assert (report.exit_code, log, prepared, made_dirs) == (0, "/tmp/workflow_space\n", [], []), log
    found = await executor.find(job.key)
    assert found is not None and found.data["argv"] == job.argv and found.data["started_at"]
    sub = dataclasses.replace(_job("pwd"), workdir="/tmp/workflow_space/sub")
    handle = await executor.start(sub)
    async with asyncio.timeout(DEADLINE):
        report = await executor.wait(handle)
    assert (report.exit_code, prepared) == (0, ["pwd"])


@pytest.mark.parametrize("executor", PER_NODE_WAYS, indirect=True)  # (a sandbox's: test_warm_sandbox.py)
async def test_a_spare_the_launcher_cannot_put_in_place_fails_the_attempt_clearly(
    executor: LocalExecutor,
) -> None:
    await executor.settle()
    shutil.rmtree(executor.files._spares[-1])  # (the next start's)
    report, log = await _run(executor, "true")
    assert report.exit_code is None and (report.error or "").startswith("could not launch: "), report
    assert "No such file or directory" in log
    report, log = await _run(executor, "echo fine")  # the next spare
    assert (report.exit_code, log) == (0, "fine\n")


@pytest.mark.parametrize("executor", LAUNCHER_WAYS, indirect=True)
async def test_nodes_go_on_when_the_launcher_is_gone(executor: LocalExecutor) -> None:
    """The launcher starts supervisors and says how they ended. Killed (OOM, an operator), it must take no
    node along; their ends are followed like a stranger's (pidfd, `exit`), and the next start has a new one."""
    launcher = executor.supervisors.launcher
    assert launcher is not None
    job = _job("sleep 1; exit 7")
    handle = await executor.start(job)
    old = launcher.pid
    assert old is not None
    others = set(_launchers()) - {old}  # (other executors' in this process)
    os.kill(old, signal.SIGKILL)
    async with asyncio.timeout(DEADLINE):
        report = await executor.wait(handle)
    assert report.exit_code == 7, report
    # (the supervisor's word on the report pipe found no launcher: not an error of the node's)
    assert executor.logs.path(7, "node", job.key.attempt).read_text() == ""
    (again, log), (other, _) = await asyncio.gather(_run(executor, "echo again"), _run(executor, "true"))
    assert again.exit_code == other.exit_code == 0 and log == "again\n"
    assert launcher.pid not in (None, old)
    assert set(_launchers()) - others == {launcher.pid}, "two launches that found it gone start one launcher"


def _state(pid: int) -> str:
    """The process's state letter (``/proc/PID/stat``: R, S, T for stopped, Z, ...)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.parametrize("executor", [*PER_NODE_WAYS, "unshare"], indirect=True)
async def test_the_end_is_reported_before_the_namespace_is_gone(executor: LocalExecutor) -> None:
    """Once the supervisor recorded the node's status and SIGKILLed what the node left, the attempt has ended:
    the server does not wait for the kernel to take the PID namespace down (which waits for every process in it
    to be reaped). Here a process entered into the node's namespace from outside (``nsenter``) is killed with
    the node's leftovers but not reaped, its parent outside being stopped: the namespace cannot end, and yet
    the end is reported; the supervisor goes once that process is reaped."""
    nsenter = shutil.which("nsenter")
    assert nsenter is not None, "nsenter(1) (util-linux) is part of the test set-up"
    node_sleep, outsider_sleep = _unique_sleep(), _unique_sleep()
    handle = await executor.start(_job(f"sleep {node_sleep}"))
    supervisor = handle.data["pid"]  # (unshare(1) without the launcher: PID 1 of the namespace is its child)
    node = await _host_pid(node_sleep)
    pid_1 = supervisor if executor.supervisors.launcher else _children(supervisor)[0]
    outsider = await asyncio.create_subprocess_exec(
        nsenter, "--target", str(pid_1), "--pid", "--", "sleep", outsider_sleep
    )
    try:
        inside = await _host_pid(outsider_sleep)
        outsider.send_signal(signal.SIGSTOP)  # it cannot reap its child now
        # (once it is stopped: a loaded machine may not have run it since, and it could still reap)
        await until(lambda: _state(outsider.pid) == "T", "nsenter to be stopped")
        os.kill(node, signal.SIGKILL)
        async with asyncio.timeout(DEADLINE):
            report = await executor.wait(handle)
        assert report.exit_code == 128 + signal.SIGKILL
        # killed before the end was reported: gone, or its SIGKILL pending (it dies once it next runs)
        assert _gone(inside) or _sigkill_pending(inside)
        await until(lambda: _gone(inside), "what the node's namespace held to be killed")
        assert not _gone(supervisor), "the supervisor is still exiting: its namespace waits for the reaping"
    finally:
        outsider.send_signal(signal.SIGCONT)
        await outsider.wait()
    await until(lambda: _gone(supervisor), "the supervisor to end once the namespace is empty")
    await executor.settle()  # (its private /tmp is removed once the supervisor is gone)
    assert not (Path(handle.data["scratch"]) / "tmp").exists()


async def test_an_attempt_ends_after_the_nodes_last_act(executor: LocalExecutor) -> None:
    """finished_at is when the supervisor's word was read (by the launcher, or the executor): never before what
    the node did last (the `exit` file's mtime, the kernel's coarse clock, is a tick or more early, often before
    the node's last act: the hand-off and running-slot figures built on it were off by milliseconds)."""
    for _ in range(5):
        report, log = await _run(executor, "date +%s.%N")
        assert report.exit_code == 0 and report.finished_at is not None
        assert report.finished_at.timestamp() >= float(log), "the end is after the node's last act"


def _sigkill_pending(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    pending = [
        int(line.split()[1], 16) for line in status.splitlines() if line.startswith(("SigPnd:", "ShdPnd:"))
    ]
    return any(mask & 1 << (signal.SIGKILL - 1) for mask in pending)


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _launchers() -> list[int]:
    """This process's children that run the launcher."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat, cmdline = (entry / "stat").read_bytes(), (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[stat.rindex(b")") + 2 :].split()[1]) == os.getpid() and b"launcher.py" in cmdline:
            found.append(int(entry.name))
    return found


def test_a_kernel_without_pidns_leaves_each_proc_to_the_supervisor(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before Linux 6.15 proc(5) refuses ``pidns=`` (EINVAL): the launcher then says ``proc`` on the gate, for
    this launch and every later one, and the supervisor mounts it (above, ``proc-by-supervisor``). Any other
    refusal is the attempt's set-up error, its reason in the log."""
    tried: list[str] = []

    def refuse(source: str, target: str, fstype: str, flags: int, data: str | None = None) -> None:
        tried.append(data or "")
        raise launcher_module.SetupError(f"mount: {target}: {os.strerror(code)}", code)

    monkeypatch.setattr(launcher_module, "mount", refuse)
    monkeypatch.setattr(launcher_module, "_proc_by_supervisor", False)
    log = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        code = errno.EINVAL
        assert launcher_module.mount_proc(1234, log) == "proc"
        assert launcher_module.mount_proc(1235, log) == "proc"
        assert tried == ["pidns=/proc/1234/ns/pid"]  # found out once
        monkeypatch.setattr(launcher_module, "_proc_by_supervisor", False)
        code = errno.EPERM
        status = launcher_module.mount_proc(1236, log)
    finally:
        os.close(log)
    assert status == "error: could not mount /proc for the node's PID namespace (see the log)"
    assert (tmp_path / "log").read_text() == "mount: /proc: Operation not permitted\n"
