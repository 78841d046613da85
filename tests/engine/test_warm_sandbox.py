"""Warm sandboxes (issue 18, target 1; the launcher's ``--warm-sandboxes``, the default): a root server's
nodes run one after another in long-lived PID and mount namespaces, started without a supervisor — and nothing
of one node reaches the next.

The isolation tests (``test_node_isolation.py``) run every attack against this way too (``sandbox``); these
are what is particular to it: the reuse, the cleaning between nodes, the supervisor kept for the unusual, the
replacing of an old or a dead sandbox.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import select
import signal
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aihub.engine.executors import launcher as launcher_module
from aihub.engine.executors import local as local_module
from aihub.engine.executors.launcher import Launched
from aihub.engine.executors.local import LocalExecutor
from aihub.runtime import build_executor
from aihub.settings import Settings
from aihub.storage.local import build_storage
from tests.engine.test_local_executor import _host_pid, _unique_sleep
from tests.engine.test_node_isolation import (
    DEADLINE,
    _isolated_executor,
    _job,
    _run,
    _running,
    data_dir,
)
from tests.polling import until

__all__ = ["data_dir"]  # (the fixture, shared)

PR_SET_CHILD_SUBREAPER = 36
#: what a node prints of its sandbox: its PID namespace (``pid:[INODE]``), then its shell's parent's pid in that
#: namespace (1: the sandbox started it itself; another: the supervisor's subshell)
WHO = "readlink /proc/self/ns/pid; echo $PPID"


@pytest.fixture
async def executor(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LocalExecutor]:
    executor = await _isolated_executor(data_dir, "sandbox", monkeypatch)
    yield executor
    await executor.close()


def _sandboxes(executor: LocalExecutor) -> list[int]:
    """The launcher's children that are sandboxes (PID 1 of a PID namespace of their own)."""
    launcher = executor.supervisors.launcher
    assert launcher is not None and launcher.pid is not None
    found = []
    for pid in Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split():
        try:
            nspid = next(
                ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln[:6] == "NSpid:"
            )
        except (OSError, StopIteration):
            continue
        if nspid.split()[-1] == "1":
            found.append(int(pid))
    return found


async def test_nodes_in_turn_share_the_sandbox_and_nothing_else(executor: LocalExecutor) -> None:
    """The second node runs in the first one's sandbox (the same PID namespace), started by the sandbox
    itself (its parent is PID 1: no supervisor); it finds none of the first one's detached
    processes, files in /tmp or mounts."""
    sleep = _unique_sleep()
    first, log = await _run(
        executor, f"{WHO}; setsid sleep {sleep} & touch /tmp/left-behind; grep -c . /proc/mounts"
    )
    assert first.exit_code == 0, log
    namespace, parent, mounts = log.split()
    assert parent == "1", "the sandbox started the node itself"
    await until(lambda: not _running(sleep), "the detached sleep to be killed")
    second, log = await _run(
        executor, f"{WHO}; ls -A /tmp; ps -eo args | grep -c '[s]leep {sleep}'; grep -c . /proc/mounts"
    )
    assert second.exit_code == 0, log
    # (/tmp as the executor makes it)
    assert log.split() == [namespace, "1", "workflow_space", "0", mounts], log
    assert len(_sandboxes(executor)) == 1


async def test_the_node_s_files_say_what_started_it(executor: LocalExecutor) -> None:
    """``supervisor`` names the node and its sandbox (a server that did not start it finds it by that); the
    node's status is recorded in ``exit`` by the sandbox, 128 + N when signal N ended it."""
    sleep = _unique_sleep()
    job = _job(f"sleep {sleep}")
    handle = await executor.start(job)
    node = await _host_pid(sleep)
    scratch = Path(handle.data["scratch"])
    pid, start, sandbox, sandbox_start = map(int, (scratch / "supervisor").read_text().split())
    assert (
        handle.data["pid"] != node
    )  # (the shell, which runs sleep: the node's process group is the shell's)
    assert pid == handle.data["pid"] and sandbox in _sandboxes(executor)
    # (the sandbox reads its node's start time off the clock, not /proc: see launcher.spawned)
    assert (start, sandbox_start) == (launcher_module.start_time(pid), launcher_module.start_time(sandbox))
    os.kill(node, signal.SIGKILL)
    async with asyncio.timeout(DEADLINE):
        report = await executor.wait(handle)
    assert report.exit_code == 128 + signal.SIGKILL, report
    assert (scratch / "exit").read_text() == f"{128 + signal.SIGKILL}\n"


@pytest.mark.parametrize(
    ("command", "code", "said"),
    [
        ("no-such-program-x", 127, "No such file or directory"),
        ("/etc/passwd", 126, "Permission denied"),
    ],
)
async def test_what_cannot_start_still_goes_through_the_supervisor(
    executor: LocalExecutor, command: str, code: int, said: str
) -> None:
    """A program that is not there, or cannot be run, is left to the supervisor, which says so as it always
    did (setpriv's message in the log, its exit status)."""
    job = _job("").__class__(key=_job("").key, argv=[command], env={})
    handle = await executor.start(job)
    async with asyncio.timeout(DEADLINE):
        report = await executor.wait(handle)
    log = executor.logs.path(7, "node", job.key.attempt).read_text()
    assert report.exit_code == code and said in log, (report, log)
    assert not (Path(handle.data["scratch"]) / "supervisor").exists()
    again, log = await _run(executor, WHO)
    assert again.exit_code == 0 and log.split()[1] == "1", log  # the next one is started directly again


@pytest.mark.parametrize(("command", "code"), [("exit 3", 3), ("kill -TERM $$", 128 + signal.SIGTERM)])
async def test_a_node_s_status_comes_with_the_sandbox_s_word(
    executor: LocalExecutor, monkeypatch: pytest.MonkeyPatch, command: str, code: int
) -> None:
    """The sandbox records a node's status in ``exit`` and then says it (``exited PID CODE node``): the server
    takes it from that word, at the time the node was reaped, without reading the file on its event loop; the
    file says the same, for a server that comes later."""

    def no_reading(scratch: Path) -> None:
        raise AssertionError(f"{scratch}/exit read on the event loop")

    monkeypatch.setattr(local_module, "_read_exit_with_time", no_reading)
    job = _job(command)
    handle = await executor.start(job)
    child = executor._children[handle.id]
    async with asyncio.timeout(DEADLINE):
        report = await executor.wait(handle)
    assert report.exit_code == code and report.error is None, report
    assert isinstance(child, Launched) and child.recorded_at is not None
    assert report.finished_at == datetime.fromtimestamp(child.recorded_at, UTC)
    assert (Path(handle.data["scratch"]) / "exit").read_text() == f"{code}\n"


async def test_a_root_node_s_mounts_do_not_reach_the_next_node(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node run as root (``AIHUB_LOCAL_RUN_AS=server``) may mount what it likes in its namespace; the
    sandbox makes each node's mounts in a copy of its own mount namespace, dropped, mounts and all, before the
    next node."""
    monkeypatch.setattr(launcher_module, "WARM_SANDBOXES", True)
    settings = Settings(data_dir=data_dir, local_run_as="server")
    settings.ensure_dirs()
    executor = build_executor(settings, *build_storage(settings))
    assert isinstance(executor, LocalExecutor)
    await executor.probe()
    try:
        look = "readlink /proc/self/ns/pid; cut -d' ' -f2,3 /proc/mounts | sort | tr ' ' :; ls -A /mnt"
        first, log = await _run(
            executor,
            f"{look}; mount -t tmpfs none /mnt && touch /mnt/mine && ls /mnt; grep -c ' /mnt ' /proc/mounts",
        )
        assert first.exit_code == 0, log
        *before, mine, mounted = log.split()
        assert (mine, mounted) == ("mine", "1"), log
        second, log = await _run(executor, look)
        assert second.exit_code == 0 and "/mnt:tmpfs" not in log and "mine" not in log, log
        # (the same mounts, when it is the same sandbox: a new one copies the host's as they are then)
        assert log.split()[0] != before[0] or log.split() == before, (before, log)
    finally:
        await executor.close()


async def test_an_old_sandbox_is_replaced(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sandbox sees the host's mounts as they were when it was made: it is lent for SANDBOX_MAX_AGE seconds,
    then replaced (here at once: each node gets a new one), and the old one exits."""
    monkeypatch.setattr(launcher_module, "SANDBOX_MAX_AGE", 0.0)
    executor = await _isolated_executor(data_dir, "sandbox", monkeypatch)
    try:
        seen, first = [], []
        for _ in range(3):
            report, log = await _run(executor, WHO)
            assert report.exit_code == 0, log
            seen.append(log.split()[0])
            first = first or _sandboxes(executor)
        # each node had a new one (compared in turn: a namespace's inode number is reused once it is gone)
        assert seen[0] != seen[1] != seen[2], seen
        await until(lambda: not set(first) & set(_sandboxes(executor)), "the first node's sandbox to exit")
    finally:
        await executor.close()


async def test_a_sandbox_that_dies_takes_its_node_and_is_replaced(executor: LocalExecutor) -> None:
    """Killed (OOM, an operator), a sandbox takes its node along — the attempt ends, as one whose process
    vanished — and the next node gets a new sandbox."""
    sleep = _unique_sleep()
    handle = await executor.start(_job(f"sleep {sleep}"))
    await _host_pid(sleep)
    (sandbox,) = _sandboxes(executor)
    os.kill(sandbox, signal.SIGKILL)
    async with asyncio.timeout(DEADLINE):
        report = await executor.wait(handle)
    assert report.exit_code == 128 + signal.SIGKILL, report
    again, log = await _run(executor, "echo again")
    assert again.exit_code == 0 and log == "again\n"
    # (its end is heard when its socket closes, which comes before the kernel has emptied its namespace and
    # the launcher can reap it)
    await until(lambda: sandbox not in _sandboxes(executor), "the dead sandbox to be reaped")


async def test_idle_sandboxes_end_with_their_launcher(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing the executor ends its launcher, which first lets its idle sandboxes go and reaps them: none is
    left behind to be reaped by whoever inherits it (a lent one stays with its node:
    ``test_nodes_go_on_when_the_launcher_is_gone``). This process is made a subreaper for the test, so that an
    orphaned sandbox would become its child."""
    libc = ctypes.CDLL(None, use_errno=True)
    executor = await _isolated_executor(data_dir, "sandbox", monkeypatch)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        report, log = await _run(executor, "true")
        assert report.exit_code == 0, log
        sandboxes = _sandboxes(executor)
        assert len(sandboxes) == 1
        await executor.close()
        for pid in sandboxes:
            with pytest.raises(ChildProcessError):  # never orphaned to this process: the launcher reaped it
                os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 (WNOHANG: it does not wait)
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        await executor.close()


async def test_an_idle_sandbox_killed_does_not_fail_the_next_node(executor: LocalExecutor) -> None:
    """Killed between two nodes (and perhaps not reaped yet when the next node comes), a sandbox is replaced:
    the next node starts in a new one."""
    report, log = await _run(executor, WHO)
    assert report.exit_code == 0, log
    (sandbox,) = _sandboxes(executor)
    os.kill(sandbox, signal.SIGKILL)
    again, log_again = await _run(executor, WHO)
    assert again.exit_code == 0, log_again
    assert log_again.split()[0] != log.split()[0], "a new sandbox"


async def test_nodes_back_to_back_keep_to_one_sandbox(executor: LocalExecutor) -> None:
    """A chain of nodes, each started as soon as the last one's end is reported (while its sandbox may still be
    undoing the mounts), runs in one sandbox: the next start waits for that rather than making another. (A
    word read ahead by that wait once stalled the launcher for 15 s and cost the sandbox; 1 start in ~65.)"""
    namespaces = set()
    for _ in range(80):
        handle = await executor.start(_job("readlink /proc/self/ns/pid"))
        async with asyncio.timeout(DEADLINE):
            report = await executor.wait(handle)
        assert report.exit_code == 0, report
        namespaces.add(Path(handle.data["log"]).read_text())
    assert len(namespaces) == 1, namespaces
    assert len(_sandboxes(executor)) == 1


def _parent(pid: int) -> int:
    return int(
        next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln[:5] == "PPid:")[5:]
    )


async def test_the_node_is_the_sandbox_s_child_and_outlives_the_launcher(executor: LocalExecutor) -> None:
    """The sandbox starts the node as its own child, so that when the launcher dies nothing else (the host's
    init, which may reap at once) can take the node's status: the sandbox records it. (Started by the
    launcher, as before, the node was handed to the host's init, and its status was read off the zombie.)"""
    sleep = _unique_sleep()
    handle = await executor.start(_job(f"sleep {sleep}; exit 7"))
    node = await _host_pid(sleep)
    scratch = Path(handle.data["scratch"])
    pid, _, sandbox, _ = map(int, (scratch / "supervisor").read_text().split())
    assert pid == handle.data["pid"] and _parent(pid) == sandbox
    launcher = executor.supervisors.launcher
    assert launcher is not None and launcher.pid is not None
    os.kill(launcher.pid, signal.SIGKILL)
    await until(lambda: _parent(sandbox) != launcher.pid, "the launcher to be gone")
    assert _parent(pid) == sandbox
    os.kill(node, signal.SIGKILL)
    async with asyncio.timeout(DEADLINE):
        report = await executor.wait(handle)
    assert report.exit_code == 7, report
    assert (scratch / "exit").read_text() == "7\n"


async def test_a_request_too_large_for_a_sandbox_starts_in_new_namespaces(executor: LocalExecutor) -> None:
    """A sandbox takes a request as one message of at most MESSAGE_MAX bytes; a node whose environment is
    larger (long parameters, say) starts the per-node way instead, and runs all the same."""
    first, log = await _run(executor, WHO)
    assert first.exit_code == 0, log
    sandbox = log.split()[0]
    value = "x" * (launcher_module.MESSAGE_MAX // 2)  # (one string of the environment may not pass 128 KiB)
    job = _job(f'{WHO}; printf %s%s "$BIG" "$BIG2" | wc -c')
    job = job.__class__(key=job.key, argv=job.argv, env={"BIG": value, "BIG2": value})
    handle = await executor.start(job)
    async with asyncio.timeout(DEADLINE):
        report = await executor.wait(handle)
    log = executor.logs.path(7, "node", job.key.attempt).read_text()
    assert report.exit_code == 0, log
    namespace, _, size = log.split()
    assert namespace != sandbox and size == str(2 * len(value)), log
    again, log = await _run(executor, WHO)
    assert again.exit_code == 0 and log.split()[0] == sandbox, log


def _made_ahead(executor: LocalExecutor) -> list[Path]:
    spare_dir = executor.files.spare_dir
    return sorted(spare_dir.iterdir()) if spare_dir.is_dir() else []


async def test_a_sandbox_makes_the_next_scratch_dir_ahead(executor: LocalExecutor) -> None:
    """Between two nodes a sandbox makes the next one's scratch dir (private /tmp 1777, the node user's empty
    workflow_space) and renames it into place at the next start; the server makes no spares of its own, and
    the sandbox removes the one it holds when it ends."""
    await executor.settle()
    assert _made_ahead(executor) == [] and executor.files._spares == []
    first, log = await _run(executor, "true")
    assert first.exit_code == 0, log
    await until(lambda: len(_made_ahead(executor)) == 1, "the sandbox to make the next scratch dir")
    (ahead,) = _made_ahead(executor)
    assert ahead.name.startswith("sandbox-")
    inode = ahead.stat().st_ino
    job = _job("stat -c '%a %U' /tmp /tmp/workflow_space; ls -A /tmp/workflow_space | wc -l")
    handle = await executor.start(job)
    async with asyncio.timeout(DEADLINE):
        report = await executor.wait(handle)
    log = executor.logs.path(7, "node", job.key.attempt).read_text()
    assert report.exit_code == 0, log
    assert log.split() == ["1777", "root", "755", "nobody", "0"], log
    assert Path(handle.data["scratch"]).stat().st_ino == inode, "the one made ahead"
    await until(lambda: len(_made_ahead(executor)) == 1, "the next one")
    launcher = executor.supervisors.launcher
    assert launcher is not None
    await launcher.close()  # (the sandbox ends with the launcher: the executor keeps its spare dir)
    await until(lambda: _made_ahead(executor) == [], "the sandbox to remove the one it held")


async def test_a_scratch_dir_the_sandbox_cannot_put_in_place_fails_the_attempt_clearly(
    executor: LocalExecutor,
) -> None:
    """A start the sandbox cannot set up (here: the dir it made ahead already holds a ``meta.json``) fails
    with the reason; the sandbox is cleaned and lent to the next node, which runs."""
    first, log = await _run(executor, WHO)
    assert first.exit_code == 0, log
    namespace = log.split()[0]
    await until(lambda: len(_made_ahead(executor)) == 1, "the sandbox to make the next scratch dir")
    (_made_ahead(executor)[0] / "meta.json").write_text("{}")
    report, _ = await _run(executor, "true")
    assert report.exit_code is None and (report.error or "").startswith("could not launch: "), report
    assert "File exists" in (report.error or ""), report
    again, log = await _run(executor, WHO)
    assert again.exit_code == 0 and log.split()[0] == namespace, log


async def test_a_start_whose_sandbox_dies_under_it_goes_to_a_new_one(executor: LocalExecutor) -> None:
    """A sandbox killed after it took a start, before it answered (here it waits to open the node's log, a
    FIFO no one reads yet): the launcher hands the start to a new sandbox, which finds the scratch dir in
    place and starts the node, once."""
    job = _job("echo ran")
    log = executor.logs.location(7, "node", job.key.attempt)
    log.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(log)
    start = asyncio.create_task(executor.start(job))
    scratch = executor.work_root / job.key.slug
    await until(lambda: (scratch / "meta.json").exists(), "the sandbox to take the start")
    (first,) = _sandboxes(executor)
    os.kill(first, signal.SIGKILL)
    await until(lambda: [first] != _sandboxes(executor) != [], "a new sandbox to take the start")
    reader = os.open(log, os.O_RDONLY | os.O_NONBLOCK)
    try:
        async with asyncio.timeout(DEADLINE):
            handle = await start
            report = await executor.wait(handle)
        assert report.exit_code == 0, report
        assert os.read(reader, 100) == b"ran\n", "the node ran once"
    finally:
        os.close(reader)


def test_a_kernel_without_pidfds_starts_nodes_in_new_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sandbox hands its node over as a pidfd (Linux 5.3 and later): on an older kernel the launcher keeps
    to new namespaces for each node, as without ``--warm-sandboxes``, instead of failing every start."""
    for name in ("_warm", "_proc_by_supervisor", "_lines_out", "SANDBOX_MAX_AGE"):  # (what _configure sets)
        monkeypatch.setattr(launcher_module, name, getattr(launcher_module, name))
    launcher_module._configure(["--warm-sandboxes", "--lines-fd=9"])
    assert launcher_module._warm is True

    def no_pidfds(pid: int, flags: int = 0) -> int:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(os, "pidfd_open", no_pidfds)
    launcher_module._configure(["--warm-sandboxes", "--lines-fd=9"])
    assert launcher_module._warm is False


def _dead_sandbox(words: list[bytes], scratch: Path) -> launcher_module.Sandbox:
    """The launcher's side of a sandbox lent a start (id 5, in ``scratch``) that said ``words`` on its channel,
    then died (its end of the channel closed): no fork, the launcher's bookkeeping alone."""
    sandbox = launcher_module.Sandbox.__new__(launcher_module.Sandbox)
    sandbox.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sandbox.pid, sandbox.made, sandbox.node, sandbox.told = 0, 0.0, None, []
    sandbox.asked = ({"id": 5, "scratch": str(scratch)}, b"{}", 1)
    launcher_module._lent.append(sandbox)
    for word in words:
        theirs.send(word)
    theirs.close()
    return sandbox


@pytest.mark.parametrize(
    ("words", "told", "recorded"),
    [
        # it died after it told the launcher its node started, maybe before it told the server: the node
        # ended with it, killed
        ([b"started 5 4242 77\n"], ["started 5 4242 77", "ended 4242 T", "exited 4242 -9"], "137"),
        # after it said the node's end, maybe before the server heard it: that end, as it said it
        (
            [b"started 5 4242 77\n", b"ended 4242 12.500000\nexited 4242 3 node\n"],
            ["started 5 4242 77", "ended 4242 12.500000", "exited 4242 3 node"],
            None,
        ),
        ([b"failed 5 no space left on device\n"], ["failed 5 no space left on device"], None),
        # clean: nothing to say again
        ([b"started 5 4242 77\n", b"ended 4242 12.5\nexited 4242 0 node\n", b"clean"], [], None),
    ],
)
def test_a_sandbox_that_dies_has_its_lines_said_again(
    words: list[bytes], told: list[str], recorded: str | None, tmp_path: Path
) -> None:
    """A sandbox tells the launcher each thing before it tells the server (see launcher.Sandbox): one that
    dies in between has the launcher say it for it, and one that died just after has it said twice (the
    server takes it once: the next test)."""
    lines = _dead_sandbox(words, tmp_path).gone()
    said_now = [  # (the launcher's own "ended" says when it found the sandbox gone)
        "ended 4242 T" if line.startswith("ended 4242 ") and line != "ended 4242 12.500000" else line
        for line in lines
    ]
    assert said_now == told
    exit_file = tmp_path / "exit"
    assert (exit_file.read_text().strip() if exit_file.exists() else None) == recorded
    assert not launcher_module._lent and not launcher_module._cleaning and not launcher_module._idle


async def test_the_server_takes_a_line_said_twice_once() -> None:
    """The launcher says again what a dead sandbox may have said (the test before): the server's side follows
    the first of each and ignores the second."""
    client = launcher_module.LauncherClient()
    future: asyncio.Future[Launched] = asyncio.get_running_loop().create_future()
    client._pending[5] = future
    for line in ("started 5 4242 77", "started 5 4242 77", "ended 4242 12.5", "exited 4242 3 node"):
        client._handle(line + "\n")
    launched = future.result()
    for line in ("ended 4242 13.0", "exited 4242 -9", "failed 5 the sandbox ended"):  # (the launcher's)
        client._handle(line + "\n")
    assert (launched.pid, launched.start_time, launched.returncode) == (4242, 77, 3)
    assert launched.node_recorded and launched.recorded_at == 12.5
    assert not client._pending and not client._launched


@pytest.mark.parametrize("same_tick", [True, False])
def test_a_start_time_read_off_the_clock_is_the_kernel_s(
    same_tick: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sandbox takes its node's start time from the clock around the spawn (a read of ``/proc/PID/stat``
    waits for the node's exec); where the two readings are in different ticks, from ``/proc`` after all."""
    if not same_tick:  # (each reading a tick later than the one before)
        clock = iter(range(1, 100))
        monkeypatch.setattr(time, "clock_gettime_ns", lambda _: next(clock) * 10**9)
    started = launcher_module.spawned(lambda: os.posix_spawn("/bin/sleep", ["sleep", "30"], {}))
    assert started is not None
    pid, start = started
    try:
        assert start == launcher_module.start_time(pid)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert launcher_module.spawned(lambda: None) is None


def test_a_failed_start_s_reason_is_one_line_of_utf8_short_enough_for_one_write() -> None:
    """A sandbox's ``failed`` line is one write to the pipe that all sandboxes share (shorter than PIPE_BUF, so
    that no other line comes inside it), and the server decodes it: its reason is cut, not inside a character."""
    exc = OSError(f"cannot rename\n{'节点' * 1000}: File exists")
    reason = launcher_module.failure_reason(exc)
    assert len(reason) <= launcher_module.REASON_MAX < select.PIPE_BUF - 64
    assert reason.decode() == f"cannot rename {'节点' * 1000}"[: len(reason.decode())]
    assert b"\n" not in reason and len(reason) > launcher_module.REASON_MAX - 3


def test_a_start_retried_after_its_sandbox_died_gets_what_that_left_undone(tmp_path: Path) -> None:
    """A sandbox that died after it renamed the scratch dir into place and before it wrote ``meta.json`` (or
    made the log's directory): the launcher hands the start to another without ``spare`` or ``make``, and that
    one writes what is missing (``find`` and ``wait`` need ``meta.json``); what was written is kept."""
    scratch = tmp_path / "attempt"
    scratch.mkdir()
    request = {"scratch": str(scratch), "log": str(tmp_path / "logs" / "1.log"), "meta": '{"a": 1}'}
    launcher_module.put_in_place(request)
    assert (scratch / "meta.json").read_text() == '{"a": 1}' and (tmp_path / "logs").is_dir()
    launcher_module.put_in_place({**request, "meta": '{"a": 2}'})
    assert (scratch / "meta.json").read_text() == '{"a": 1}'
