"""The local executor: each attempt of a node is a process tree on this host.

Shape of one attempt (``work_root/r{run}-{node}-a{attempt}/`` is its *scratch dir*)::

    server --> launcher --(new session, namespaces)--> sh shim.sh SCRATCH - ... -- argv   (supervisor)
    server --(new session)--> [unshare --mount ...] sh shim.sh SCRATCH LOG ... -- argv    (the same, no root)
                                                          └─ argv           (the node, same process group)

- **No Python per node.** The supervisor is ``shim.sh``, a fixed POSIX shell script shipped next to this
  module: user values reach it only as argv after ``--`` and as environment variables, never as code. It
  appends the node's stdout+stderr to the attempt's log, runs the node in the foreground (so its signal
  dispositions are the defaults), survives the SIGTERM meant for the node, and records the node's exit
  status in ``<scratch>/exit``. It leads a new session and process group, so stopping or ``kill -9``-ing
  the server does not touch running nodes, and ``stop`` signals the whole group at once.
- **Isolation.** Where a private mount namespace is available (probed once, by really running the
  supervisor with a private ``/tmp``: the launcher's own system calls as root (``launcher.py``), else
  ``unshare --mount``, as root or with ``--map-root-user``), the launcher or the supervisor bind-mounts ``<scratch>/tmp`` on ``/tmp`` (with an empty ``/tmp/workflow_space``) and the
  data storages at their paths, so concurrent nodes can use the same absolute paths. Elsewhere nodes share
  the host's ``/tmp`` and the container tab says ``isolation: none (<reason>)``.
- **Files instead of pipes.** Because a node's ``/tmp`` is a directory of the host, the executor unpacks
  input artifacts *before* the start and collects outputs *after* the exit, in the server process;
  :func:`host_path` is the one mapping from a node-visible path to the host (:func:`node_realpath` first
  follows the node's symlinks as the node would).
- **Restart safety.** Everything needed to follow an attempt lives in its scratch dir (``meta.json``,
  ``exit``, ``stop``, ``report.json``) or in ``/proc``, and the handle is plain JSON. ``wait`` works for processes
  this executor started (a pidfd of the child) and for ones adopted after a restart (a pidfd of a stranger,
  guarded against PID reuse by the process start time); its report is saved, so waiting again after the
  scratch ``tmp`` tree was removed returns the same outputs.

Speed matters (a workflow of many tiny nodes): per attempt the server does a few small file operations in a
worker thread and one line to the launcher (a fork+exec without it); the supervisor adds one ``sh`` (plus,
without the launcher, ``unshare`` and one ``mount`` per bind when isolated).

Environment variables whose names start with ``_aihub_`` are reserved for the supervisor and refused.

Parts: :mod:`~aihub.engine.executors.local_supervisors` decides once how supervisors start here and starts
them (through :mod:`~aihub.engine.executors.launcher` or ``unshare(1)``); :mod:`~aihub.engine.executors.local_files`
prepares an attempt's files and maps node paths to the host; :class:`LocalExecutor` starts, finds, waits for,
stops and describes attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aihub.engine.executors.base import (
    ExitReport,
    Handle,
    Job,
    JobKey,
    OutputDecl,
    SharedWaits,
    read_json,
    write_json,
)
from aihub.engine.executors.launcher import Launched, recorded_status
from aihub.engine.executors.local_files import (
    IMAGE_NOT_USED,
    AttemptFiles,
    _append_log,
    _LaunchError,
    host_path,
    node_realpath,
    resolver,
)
from aihub.engine.executors.local_supervisors import (
    _WATCHED,
    SHIM,
    Supervisors,
    _Child,
    _proc_stat,
    _read_exit,
    _read_exit_with_time,
    _start_time,
    _write_exit,
)
from aihub.engine.executors.processes import readable
from aihub.engine.outputs import collect_outputs
from aihub.settings import absolute_path
from aihub.storage.base import ArtifactStore, LogStore

__all__ = ["IMAGE_NOT_USED", "SHIM", "LocalExecutor", "host_path", "node_realpath"]


VANISHED = "process vanished (server or host restarted?)"
ELSEWHERE = (
    "lost: the attempt ran under another data dir or host ({scratch}); this engine worker cannot follow it"
)
_POLL_MAX = 0.1  # seconds between checks when pidfds are unavailable
_KILL_WAIT = 5.0  # seconds for a SIGKILLed group to be gone
#: seconds an ended attempt's private /tmp waits, to be removed in one worker call with those of the attempts that
#: end meanwhile (a thread round trip for each node was most of the worker threads' CPU per node: round eight)
REMOVE_BATCH_SECONDS = 0.05

# Popen objects of supervisors still running when their executor was closed: kept (so no ResourceWarning)
# and reaped opportunistically, so they do not stay zombies for the life of the server.
_orphans: set[subprocess.Popen[bytes]] = set()


# ---------------------------------------------------------------------------------------------- processes


def _alive(pid: int | None, start_time: int | None) -> bool:
    """True while the process started as ``(pid, start_time)`` runs (zombies count as ended)."""
    if pid is None or start_time is None:
        return False
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X", "x") and stat[1] == start_time


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0")]
    except OSError:
        return []


def _find_node(scratch: Path) -> tuple[int, int | None] | None:
    """(pid, start time) of the running attempt in ``scratch``: a node the launcher started in a warm sandbox
    (``supervisor`` names it and the sandbox, which records its status once the launcher is gone: while the
    sandbox runs, the attempt has not ended unrecorded), or its supervisor (found by its command line)."""
    record = _sandbox_record(scratch)
    if record is not None and (_alive(*record[:2]) or _alive(*record[2:])):
        return record[0], record[1]
    pid = _find_supervisor(scratch)
    return None if pid is None else (pid, _start_time(pid))


def _sandbox_record(scratch: Path) -> tuple[int, int, int, int] | None:
    """``supervisor``: the node's pid and start time, and its sandbox's (see launcher.py), if there is one."""
    try:
        pid, start, holder, holder_start = map(int, (scratch / "supervisor").read_text().split())
    except (OSError, ValueError):
        return None
    return pid, start, holder, holder_start


async def _until_recorded(scratch: Path) -> None:
    """Return once the node's status is recorded, or once nothing is left that could record it: a node in a
    warm sandbox whose launcher is gone has its status recorded by the sandbox, just after its end."""

    def waiting() -> bool:
        record = _sandbox_record(scratch)
        return _read_exit(scratch) is None and record is not None and _alive(*record[2:])

    await _poll_while(waiting)


async def _poll_while(condition: Callable[[], bool]) -> None:
    """Return once ``condition()`` is false, checked after 1 ms, then twice as long each time up to _POLL_MAX."""
    interval = 0.001
    while condition():
        await asyncio.sleep(interval)
        interval = min(interval * 2, _POLL_MAX)


def _find_supervisor(scratch: Path) -> int | None:
    """The pid of the running supervisor of the attempt in ``scratch``: ``... shim.sh SCRATCH ...`` (or
    the ``unshare ... sh shim.sh SCRATCH`` it is in its first moments)."""
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit() and _runs_supervisor_of(int(entry.name), scratch):
                return int(entry.name)
    return None


def _runs_supervisor_of(pid: int, scratch: Path) -> bool:
    cmdline = _cmdline(pid)
    try:
        at = cmdline.index(str(SHIM))
    except ValueError:
        return False
    return cmdline[at + 1 : at + 2] == [str(scratch)]


def _reap_orphans() -> None:
    for proc in list(_orphans):
        if proc.poll() is not None:
            _orphans.discard(proc)


# ------------------------------------------------------------------------------------------------ executor


class LocalExecutor:
    """Runs attempts as supervised process trees on this host (see the module docstring)."""

    name = "local"

    def __init__(
        self,
        work_root: Path,
        artifacts: ArtifactStore,
        logs: LogStore,
        *,
        isolation: Literal["auto", "off"] = "auto",
        run_as: str = "auto",
        private_paths: Sequence[Path] = (),
    ) -> None:
        self.work_root = absolute_path(work_root)
        self._work_root_slash = str(self.work_root).rstrip("/") + "/"
        self.artifacts = artifacts
        self.logs = logs
        self.supervisors = Supervisors(
            self.work_root,
            isolation=isolation,
            run_as=run_as,
            private_paths=[absolute_path(p) for p in private_paths],
        )
        self.files = AttemptFiles(self.work_root, artifacts, logs, self.supervisors)
        self._children: dict[str, _Child] = {}
        self._stops: set[str] = set()  # attempts this executor asked to stop (it wrote their ``stop`` file)
        self._waits = SharedWaits()
        self._background = Background()
        self._host = socket.gethostname()

    async def ready(self) -> None:
        """Raise unless the scratch root is a writable directory (``/readyz``)."""
        if not self.work_root.is_dir():
            raise RuntimeError(f"{self.work_root} is not a directory")
        if not os.access(self.work_root, os.W_OK | os.X_OK):
            raise RuntimeError(f"{self.work_root} is not writable")

    # ------------------------------------------------------------------------------------------ probe
    async def probe(self) -> None:
        """Decide, once, how supervisors start here (see :class:`Supervisors`)."""
        await self.supervisors.probe()
        await asyncio.to_thread(self.files.reset_spares)
        self._make_spares()

    def _make_spares(self) -> None:
        """Make the spare scratch dirs wanted, in the background (see :class:`AttemptFiles`)."""
        for _ in range(self.files.spares_wanted()):
            self._background.run(asyncio.to_thread(self.files.make_spare), "spare scratch dir")

    # ------------------------------------------------------------------------------------------ start
    async def start(self, job: Job) -> Handle:
        if self.supervisors.tools is None:
            await self.probe()
        _reap_orphans()
        scratch = self.work_root / job.key.slug
        if scratch.exists():  # started before (a server restart between start and record): same attempt
            existing = await self.find(job.key)
            if existing is not None:
                return existing
            await asyncio.to_thread(shutil.rmtree, scratch, True)
        job = self.files.out_of_private_paths(job)
        # file operations and the fork+exec run in a worker thread (or the launcher's process): on a slow disk
        # they would otherwise stall the event loop, and with it the hand-off of every other running node
        log_path, data, spare = await self.files.prepare(job, scratch)
        try:
            binds = await self.files.prepare_filesystem(job, scratch, data)
            env = Supervisors.supervisor_env(self.files.node_env(job, scratch))
            proc, data["start_time"] = await self.supervisors.launch(
                scratch, log_path, data["workdir"], binds, job.argv, env, spare=spare, meta=data
            )
        except (_LaunchError, OSError) as exc:
            message = str(exc) if isinstance(exc, _LaunchError) else f"could not launch: {exc}"
            return self._fail_launch(job.key, scratch, data, message)
        self._children[job.key.slug] = proc
        data["pid"] = proc.pid
        self._make_spares()  # the one taken, for the next start (now: not in this start's way)
        return Handle(self.name, job.key.slug, data)

    def _fail_launch(self, key: JobKey, scratch: Path, data: dict[str, Any], message: str) -> Handle:
        """An attempt that could not start still gets a handle; ``wait`` reports the message."""
        self.files.ensure_meta(scratch, data)  # (the launcher may not have put them in place)
        _append_log(data, message)
        _write_exit(scratch, f"error: {message}")
        return Handle(self.name, key.slug, data)

    # ------------------------------------------------------------------------------------------- find
    async def find(self, key: JobKey) -> Handle | None:
        """The attempt started for ``key``: ended (its status is recorded), or running (its supervisor is
        found among this host's processes by its command line, which names the scratch dir: no PID file
        to trust after a reboot, no PID reuse to fear)."""
        scratch = self.work_root / key.slug
        data = read_json(scratch / "meta.json")
        if data is None:
            return None
        if not (scratch / "exit").exists():
            found = await asyncio.to_thread(_find_node, scratch)
            if found is not None:
                data["pid"], data["start_time"] = found
            elif not (scratch / "exit").exists():  # (it may have ended meanwhile: status first, then exit)
                return None  # never started, or gone without a trace (the host restarted)
        return Handle(self.name, key.slug, data)

    # ------------------------------------------------------------------------------------------- wait
    async def wait(self, handle: Handle) -> ExitReport:
        return await self._waits.wait(handle.id, lambda: self._wait(handle))

    def _elsewhere(self, handle: Handle) -> bool:
        """The attempt was started by an executor with another work root: another data dir, or another host
        (a run taken over from an engine worker that died). Its files and processes are not this one's."""
        scratch = handle.data["scratch"]
        if scratch.startswith(self._work_root_slash):  # ours, as this executor writes it (once per node)
            return False
        return not Path(scratch).is_relative_to(self.work_root)

    async def _wait(self, handle: Handle) -> ExitReport:
        scratch = Path(handle.data["scratch"])
        if self._elsewhere(handle):
            return ExitReport(None, error=ELSEWHERE.format(scratch=scratch))
        # A report is saved only when outputs were collected (anything else can be read again from the
        # status files); one of our own children has none yet.
        child = self._children.get(handle.id)  # (forgotten once reaped)
        saved = None if child is not None else read_json(scratch / "report.json")
        if saved is None:
            await self._until_ended(handle)
            recorded = _recorded_by_sandbox(child) or _read_exit_with_time(scratch)
            if recorded[0] is None:  # (a sandbox whose launcher is gone records it just after the end)
                await _until_recorded(scratch)
                recorded = _read_exit_with_time(scratch)
            if recorded[0] is None:  # (the report reads it again: a stop may have recorded it meanwhile)
                recorded = None
                if (scratch / "stop").exists():
                    _record_stopped_supervisor(child, scratch)
            ended_at = child.recorded_at if isinstance(child, _WATCHED) else None
            # our own child's ``stop`` file can only be our own (no stat for it on the event loop)
            stopped = handle.id in self._stops if child is not None else None
            report = await _report(self.artifacts, handle.data, scratch, ended_at, recorded, stopped)
            self._stops.discard(handle.id)
            if handle.data["outputs"]:
                write_json(scratch / "report.json", report.to_json())
        else:
            report = ExitReport.from_json(saved)
        # removed off the hand-off path (again after a crash between saving and removing: harmless), once the
        # supervisor is gone: its PID namespace may still be ending, the node's leftovers with it
        self._background.remove_later(scratch / "tmp", child.ended if isinstance(child, _WATCHED) else None)
        return report

    async def settle(self) -> None:
        """Wait for the background work: removing finished attempts' private /tmp, making spare scratch dirs
        (tests, shutdown)."""
        await self._background.settle()

    async def _until_ended(self, handle: Handle) -> None:
        """Return once the supervisor has ended (reaping it when it is our child)."""
        pid, start_time = handle.data.get("pid"), handle.data.get("start_time")
        if pid is None:
            return
        child = self._children.get(handle.id)
        if child is not None and child.pid != pid:
            child = None
        if isinstance(child, _WATCHED):
            # its status is recorded and what the node left is killed: no need to wait for the namespaces
            # to be taken down (see launcher.py; shim.sh)
            await child.recorded.wait()
            self._children.pop(handle.id, None)
            if child.reported or child.returncode is not None:
                return
            child = None  # the launcher is gone, and with it the news of the end: follow it as a stranger
        if child is None and not _alive(pid, start_time):
            return
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError):  # no pidfds here (old kernel, not Linux), or already gone
            await self._poll_until_ended(handle.id, child, pid, start_time)
            return
        try:
            if child is not None or _alive(pid, start_time):  # so the fd is of the right process
                await readable(fd)
        finally:
            os.close(fd)
        if child is not None:
            child.poll()
            self._children.pop(handle.id, None)

    async def _poll_until_ended(
        self, slug: str, child: _Child | None, pid: int, start_time: int | None
    ) -> None:
        await _poll_while(lambda: (child.poll() is None) if child is not None else _alive(pid, start_time))
        self._children.pop(slug, None)

    # ------------------------------------------------------------------------------------------- stop
    async def stop(self, handle: Handle, grace: float) -> None:
        """SIGTERM to the attempt's process group, SIGKILL after ``grace`` seconds; returns once it ended.

        Idempotent, and harmless on an attempt that already ended. The supervisor survives SIGTERM and
        records the node's status; SIGKILL takes it along, so then the status (137) is recorded here.
        """
        scratch = Path(handle.data["scratch"])
        if self._elsewhere(handle) or _read_exit(scratch) is not None or handle.data.get("pid") is None:
            return  # (another host's process: its PID means nothing here)
        (scratch / "stop").touch()
        self._stops.add(handle.id)
        if not self._signal_group(handle, signal.SIGTERM):
            return  # nothing of this attempt is left to stop
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(grace, 0.0)):
                await self._until_ended(handle)
        if _read_exit(scratch) is not None:
            return
        if not self._running(handle) and not self._signal_group(handle, 0):
            # the SIGTERM ended it all before the supervisor could record anything (it was still starting:
            # unshare's child gets the signal before the supervisor traps it)
            _record_stopped_supervisor(self._children.get(handle.id), scratch)
            if _read_exit(scratch) is None:
                _write_exit(scratch, str(128 + signal.SIGTERM))
            return
        # Still running, or its supervisor is gone and left the node behind: kill what is left of the group.
        if self._signal_group(handle, signal.SIGKILL):
            _append_log(handle.data, f"still running {grace:g} s after SIGTERM: killed (SIGKILL)")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_KILL_WAIT):
                await self._until_ended(handle)
        if _read_exit(scratch) is None and not self._running(handle):
            _write_exit(scratch, str(128 + signal.SIGKILL))

    def _signal_group(self, handle: Handle, sig: int) -> bool:
        """Signal the attempt's process group (its id is the supervisor's pid); False when it is gone.

        PID reuse guard: the group is ours while the supervisor runs (or is our unreaped child), or when no
        process has its pid any more (then no new group can have that id either).
        """
        pid, start_time = handle.data["pid"], handle.data.get("start_time")
        if not isinstance(self._children.get(handle.id), subprocess.Popen):  # (the launcher reaps its own)
            stat = _proc_stat(pid)
            if stat is not None and stat[1] != start_time:
                return False
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def _running(self, handle: Handle) -> bool:
        pid, start_time = handle.data.get("pid"), handle.data.get("start_time")
        child = self._children.get(handle.id)
        if child is not None and child.pid == pid and child.poll() is not None:
            return False
        if isinstance(child, subprocess.Popen) and child.pid == pid:
            return True
        return _alive(pid, start_time)

    # --------------------------------------------------------------------------------------- describe
    async def describe(self, handle: Handle) -> dict[str, Any]:
        data = handle.data
        return {
            "executor": self.name,
            "host": self._host,
            "pid": data.get("pid"),
            "pgid": data.get("pid"),  # the supervisor leads the attempt's process group
            "isolation": data["isolation"],
            "state": self._state(handle),
            "scratch": data["scratch"],
            "argv": list(data["argv"]),
            "workdir": data["workdir"],
            "env": list(data["env_names"]),  # names only: values may be tokens
            "resources": data["resources"],
            "started_at": data["started_at"],
        }

    def _state(self, handle: Handle) -> str:
        scratch = Path(handle.data["scratch"])
        if self._elsewhere(handle):
            return "started by another engine worker (another data dir or host)"
        status = _read_exit(scratch)
        if status is None:
            return "running" if self._running(handle) else f"ended: {VANISHED}"
        if status.startswith("error:"):
            return f"failed to start: {status.removeprefix('error:').strip()}"
        stopped = " (stopped)" if (scratch / "stop").exists() else ""
        return f"exited with code {status}{stopped}"

    async def events(self, handle: Handle) -> list[dict[str, Any]]:
        return []

    async def close(self) -> None:
        """Stop following attempts. Running nodes keep running: the next server re-attaches to them."""
        await self._waits.cancel()
        await self.settle()
        _orphans.update(c for c in self._children.values() if isinstance(c, subprocess.Popen))
        self._children.clear()
        _reap_orphans()
        # (the launcher first: an idle sandbox may be making a scratch dir in the spare dir)
        await self.supervisors.close()
        await asyncio.to_thread(self.files.reset_spares)


# ---------------------------------------------------------------------------------------------- helpers


async def _report(
    artifacts: ArtifactStore,
    data: dict[str, Any],
    scratch: Path,
    ended_at: float | None = None,
    recorded: tuple[str | None, datetime] | None = None,
    stopped: bool | None = None,
) -> ExitReport:
    """The attempt's report from its files. ``ended_at``: when the launcher heard the supervisor's word (a
    fine clock, a fraction of a millisecond after the end), else the ``exit`` file's mtime is the end
    (the kernel's coarse clock: a tick, and 2-6 ms early here). ``recorded``: the ``exit`` file as the caller
    has just read it (a recorded status does not change), else it is read here. ``stopped``: whether a stop was
    asked for, when the caller knows, else the ``stop`` file says."""
    if stopped is None:
        stopped = (scratch / "stop").exists()
    report = ExitReport(None, started_at=datetime.fromisoformat(data["started_at"]), stopped=stopped)
    status, report.finished_at = recorded or _read_exit_with_time(scratch)
    if ended_at is not None and status is not None:
        report.finished_at = max(report.finished_at, datetime.fromtimestamp(ended_at, UTC))
    # (the coarse clock of a node that ended within a tick of its start may put its end before its start)
    report.finished_at = max(report.finished_at, report.started_at)
    if status is None:
        report.error = VANISHED
    elif status.startswith("error:"):
        report.error = status.removeprefix("error:").strip()
    elif not status.isdigit():
        report.error = f"unreadable exit status {status!r}"
    else:
        report.exit_code = int(status)
        if report.exit_code == 0 and not stopped and data["outputs"]:  # (none declared: nothing to map)
            decls = [OutputDecl(**o) for o in data["outputs"]]
            report.outputs, report.error = await collect_outputs(
                decls, resolver(data), artifacts, data["max_text"], tmp_dir=scratch
            )
    return report


def _recorded_by_sandbox(child: _Child | None) -> tuple[str, datetime] | None:
    """What a node's ``exit`` says, as its sandbox told the launcher just after writing it, and when the node was
    reaped; None for anything else (the file is read): saves the event loop a file's open and read a node."""
    if not isinstance(child, Launched) or not child.node_recorded or child.recorded_at is None:
        return None
    code = child.returncode
    assert code is not None
    return recorded_status(code), datetime.fromtimestamp(child.recorded_at, UTC)


def _record_stopped_supervisor(child: _Child | None, scratch: Path) -> None:
    """A stop's signal ended the supervisor before it recorded anything (it was still starting, or a SIGKILL
    took it): record the signal, as the supervisor would have (128 + N)."""
    code = child.poll() if child is not None else None
    if code is not None and code < 0:  # unshare ends with its child's signal
        _write_exit(scratch, recorded_status(code))


class Background:
    """The executor's work off the hand-off path, in tasks the executor waits for on its way out: spare scratch
    dirs made, and ended attempts' private /tmp removed."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._removals: list[Path] = []  # private /tmp dirs to remove in the next batch
        self._removing: asyncio.Task[None] | None = None  # the batch under way

    def run(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def remove_later(self, path: Path, after: asyncio.Event | None = None) -> None:
        """Remove an ended attempt's private /tmp in a worker thread, with those of the attempts that end in the
        next ``REMOVE_BATCH_SECONDS``: one worker call for them all, not one each (``after``: once set)."""
        if after is not None and not after.is_set():  # (its namespace is still being taken down)
            self.run(self._remove_after(path, after), f"clean {path}")
            return
        self._removals.append(path)
        if self._removing is None:
            self._removing = self.run(self._remove_batches(), "private /tmp removal")

    async def _remove_after(self, path: Path, after: asyncio.Event) -> None:
        await after.wait()
        self.remove_later(path)

    async def _remove_batches(self) -> None:
        try:
            while self._removals:
                await asyncio.sleep(REMOVE_BATCH_SECONDS)
                paths, self._removals = self._removals, []
                await asyncio.to_thread(_remove_all, paths)
        finally:
            self._removing = None

    async def settle(self) -> None:
        """Return once every task, and every task they started, has ended."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _remove_all(paths: list[Path]) -> None:
    """Remove attempts' private /tmp dirs (in a worker thread: even the usual nearly-empty one costs two rmdir(2),
    2-3 ms on a disk mounted with ``discard``, which the event loop, every other node's hand-off, must not wait
    for)."""
    for path in paths:
        if not _remove_if_nearly_empty(path):
            shutil.rmtree(path, True)


def _remove_if_nearly_empty(path: Path) -> bool:
    try:
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(path / "workflow_space")
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
