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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import posixpath
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aihub.engine.artifacts import ArtifactError, unpack
from aihub.engine.executors.base import (
    ExitReport,
    Handle,
    Job,
    JobKey,
    OutputDecl,
    Resources,
    SharedWaits,
    StorageMount,
    read_json,
    write_json,
)
from aihub.engine.executors.launcher import Launched, LauncherClient
from aihub.engine.outputs import collect_outputs
from aihub.settings import absolute_path
from aihub.storage.base import ArtifactMissing, ArtifactStore, LogStore, StoreError

__all__ = ["SHIM", "LocalExecutor", "host_path", "node_realpath"]

log = logging.getLogger(__name__)

SHIM = Path(__file__).with_name("shim.sh")
WORKFLOW_SPACE = "/tmp/workflow_space"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RESERVED_ENV_PREFIX = "_aihub_"
VANISHED = "process vanished (server or host restarted?)"
ELSEWHERE = (
    "lost: the attempt ran under another data dir or host ({scratch}); this engine worker cannot follow it"
)
#: the log's first line for a node that names an image (the details page says the same)
IMAGE_NOT_USED = (
    "the local executor runs this node on this host with its own tools; its image is not used "
    "(AIHUB_EXECUTOR=container runs nodes in their images)"
)
PUBLIC_MOUNTS = "/opt/aihub"  # where storages from hidden directories are shown to nodes
PID_NAMESPACE = ["--pid", "--fork", "--kill-child", "--mount-proc"]  # the namespace ends with unshare
_TOOL_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"])
_POLL_MAX = 0.1  # seconds between checks when pidfds are unavailable
_MAX_SYMLINKS = 40
_KILL_WAIT = 5.0  # seconds for a SIGKILLed group to be gone

# Popen objects of supervisors still running when their executor was closed: kept (so no ResourceWarning)
# and reaped opportunistically, so they do not stay zombies for the life of the server.
_orphans: set[subprocess.Popen[bytes]] = set()

# A supervisor this executor started: its own child (the unshare(1) chain, or no isolation), or one the
# launcher started (which reaps it and says how it ended).
_Child = subprocess.Popen[bytes] | Launched

Storages = Sequence[tuple[str, str]]  # (node path, host path), as kept in handles


# --------------------------------------------------------------------------------------------- path mapping


def host_path(scratch: Path, node_path: str, isolated: bool, storages: Storages = ()) -> Path:
    """Where the node-visible absolute ``node_path`` is on the host (no symlinks followed).

    Isolated: a storage's path maps to its host path, ``/tmp`` to ``<scratch>/tmp``, anything else to the
    same path. Without isolation the node sees the host as it is.
    """
    if not node_path.startswith("/"):
        raise ValueError(f"{node_path!r} is not an absolute path")
    path = posixpath.normpath(node_path)
    path = "/" + path.lstrip("/")  # normpath keeps a leading "//"
    if not isolated:
        return Path(path)
    for mount, host in sorted(storages, key=lambda s: len(s[0]), reverse=True):
        rel = _relative_to(path, mount)
        if rel is not None:
            return Path(host, rel) if rel else Path(host)
    rel = _relative_to(path, "/tmp")
    if rel is not None:
        return scratch / "tmp" / rel if rel else scratch / "tmp"
    return Path(path)


def node_realpath(scratch: Path, node_path: str, isolated: bool, storages: Storages = ()) -> str:
    """``node_path`` with symlinks resolved *as the node sees them* (``/tmp/out -> /tmp/real`` must not
    land on the host's ``/tmp/real``). Components that do not exist are kept as they are."""
    if not isolated:
        return node_path
    todo = [p for p in reversed(node_path.split("/")) if p not in ("", ".")]
    resolved = "/"
    hops = 0
    while todo:
        part = todo.pop()
        if part == "..":
            resolved = posixpath.dirname(resolved)
            continue
        candidate = posixpath.join(resolved, part)
        try:
            target = os.readlink(host_path(scratch, candidate, True, storages))
        except OSError:  # not a symlink, or does not exist
            resolved = candidate
            continue
        hops += 1
        if hops > _MAX_SYMLINKS:
            raise ValueError(f"too many levels of symbolic links in {node_path}")
        todo.extend(p for p in reversed(target.split("/")) if p not in ("", "."))
        if target.startswith("/"):
            resolved = "/"
    return resolved


def _relative_to(path: str, root: str) -> str | None:
    if path == root:
        return ""
    if path.startswith(root.rstrip("/") + "/"):
        return path[len(root.rstrip("/")) + 1 :]
    return None


# ---------------------------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of a process, or None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[19])


def _start_time(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return stat[1] if stat else None


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


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)


@dataclass(frozen=True)
class _Tools:
    """Absolute paths of the programs the supervisor needs (a node's PATH must not choose them)."""

    sh: str
    mount: str | None
    unshare: str | None
    setpriv: str | None = None
    launcher: bool = False  # the launcher may make the namespace system calls itself (root on Linux)

    @classmethod
    def find(cls) -> _Tools:
        sh = shutil.which("sh", path=_TOOL_PATH)
        if sh is None:
            raise RuntimeError("the local executor needs a POSIX sh on this host")
        found = {name: shutil.which(name, path=_TOOL_PATH) for name in ("mount", "unshare", "setpriv")}
        return cls(sh, **found, launcher=os.geteuid() == 0 and sys.platform == "linux")


@dataclass(frozen=True)
class _Way:
    """One way of isolating nodes: the launcher's system calls, or an unshare(1) command."""

    launcher: bool
    unshare: tuple[str, ...]
    pid_namespace: bool


def _isolation_ways(tools: _Tools, root: bool) -> list[_Way]:
    """The ways to try, best first: a PID namespace before none (its own /proc, and whatever a node leaves
    running dies with it); the launcher (root; its /proc needs Linux 6.15) before unshare(1) as root; then
    unshare(1) in a user namespace (a server that is not root)."""
    ways: list[_Way] = []
    for pid in (True, False):
        if tools.launcher:
            ways.append(_Way(True, (), pid))
        if tools.unshare is not None and tools.mount is not None:
            mount = (tools.unshare, "--mount", "--propagation", "private")
            ways += [_Way(False, (*mount, *PID_NAMESPACE) if pid else mount, pid)] if root else []
    if tools.unshare is not None and tools.mount is not None:
        mapped = (tools.unshare, "--mount", "--map-root-user", "--propagation", "private")
        ways += [_Way(False, (*mapped, *PID_NAMESPACE), True), _Way(False, mapped, False)]
    return ways


# ------------------------------------------------------------------------------------------------ executor


class _LaunchError(Exception):
    """The attempt cannot start (bad input artifact, missing storage, ...): it fails with this message."""


Bind = tuple[str, str, str]  # (host source, mount point, "rw" | "ro" | "tree")


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
        self.artifacts = artifacts
        self.logs = logs
        self.isolation_mode = isolation
        self.run_as = run_as
        # hidden from nodes (an empty, read-only directory is mounted over each): the data dir, so the
        # database, logs, artifacts and other attempts' scratch dirs are out of a node's reach
        self.private_paths = [absolute_path(p) for p in private_paths]
        self.node_user: tuple[int, int] | None = None  # (uid, gid) nodes run as; None: the server's own
        self.weaknesses: list[str] = []  # what this host cannot give nodes, said at start and per node
        self._pid_namespace = False
        self.isolated = False
        self.isolation_reason = "not probed yet"
        self._tools: _Tools | None = None
        self._unshare: list[str] = []  # the unshare(1) command a supervisor starts in, without the launcher
        self._launcher: LauncherClient | None = None  # starts supervisors in new namespaces, when root
        self._user_namespace = False
        self._children: dict[str, _Child] = {}
        self._waits = SharedWaits()
        self._cleanups: set[asyncio.Task[None]] = set()
        self._host = socket.gethostname()

    async def ready(self) -> None:
        """Raise unless the scratch root is a writable directory (``/readyz``)."""
        if not self.work_root.is_dir():
            raise RuntimeError(f"{self.work_root} is not a directory")
        if not os.access(self.work_root, os.W_OK | os.X_OK):
            raise RuntimeError(f"{self.work_root} is not writable")

    # ------------------------------------------------------------------------------------------ probe
    async def probe(self) -> None:
        """Find the tools and decide, once, whether nodes get a private mount namespace."""
        self._tools = _Tools.find()
        self.work_root.mkdir(parents=True, exist_ok=True)
        await self._forget_isolation()
        if self.isolation_mode == "off":
            self.isolation_reason = "disabled by configuration (AIHUB_LOCAL_ISOLATION=off)"
        else:
            self.isolation_reason = await self._probe_isolation(self._tools)
        self.node_user = self._node_user(self._tools)
        self.weaknesses = self._find_weaknesses()
        if self.isolated:
            await asyncio.to_thread(self._make_empty_dir)
        for weakness in self.weaknesses:
            log.warning("SECURITY: local executor: %s", weakness)

    def _node_user(self, tools: _Tools) -> tuple[int, int] | None:
        """Whom nodes run as: ``AIHUB_LOCAL_RUN_AS`` (``auto``: ``nobody`` when the server is root)."""
        if self.run_as == "server" or self._why_not_another_user(tools):
            if self.run_as not in ("auto", "server"):
                raise RuntimeError(
                    f"AIHUB_LOCAL_RUN_AS={self.run_as}: cannot run nodes as another user here "
                    f"({self._why_not_another_user(tools)})"
                )
            return None
        return _lookup_user("nobody" if self.run_as == "auto" else self.run_as)

    def _why_not_another_user(self, tools: _Tools) -> str:
        if not self.isolated:
            return "there is no mount namespace to keep the data dir out of their reach"
        if os.geteuid() != 0 or self._user_namespace:
            return "the server is not root"
        if tools.setpriv is None:
            return "setpriv(1) not found"
        return ""

    def _find_weaknesses(self) -> list[str]:
        weak = []
        if not self.isolated:
            weak.append(
                f"no mount namespace ({self.isolation_reason}): nodes share this host's /tmp, see the data "
                "dir and cannot mount data storages"
            )
        elif not self._pid_namespace:
            weak.append(
                "no PID namespace: nodes see this host's processes, and what they detach outlives them"
            )
        if self.node_user is None:
            who = "root" if os.geteuid() == 0 else "the server's user"
            why = (
                "AIHUB_LOCAL_RUN_AS=server"
                if self.run_as == "server"
                else self._why_not_another_user(self._require_tools())
            )
            weak.append(f"nodes run as {who} ({why}): they can read whatever that user can")
        return weak

    def _make_empty_dir(self) -> None:
        empty = self.work_root / ".empty"
        empty.mkdir(mode=0o555, exist_ok=True)

    async def _forget_isolation(self) -> None:
        self.isolated = self._pid_namespace = self._user_namespace = False
        self._unshare = []
        if self._launcher is not None:
            await self._launcher.close()
            self._launcher = None

    async def _probe_isolation(self, tools: _Tools) -> str:
        """Use the first way of isolating nodes that really works here (see :func:`_isolation_ways`)."""
        reason = "unshare(1) or mount(8) not found"
        for way in _isolation_ways(tools, root=os.geteuid() == 0):
            self._launcher = LauncherClient() if way.launcher else None
            self._unshare, self._pid_namespace = list(way.unshare), way.pid_namespace
            self._user_namespace = "--map-root-user" in way.unshare
            reason = await self._try_isolation()
            if not reason:
                self.isolated = True
                return ""
            await self._forget_isolation()
        return reason

    async def _try_isolation(self) -> str:
        """Run the real supervisor, the way chosen, with a private /tmp; "" when that worked."""
        probe = self.work_root / f".probe-{uuid.uuid4().hex}"
        marker = f".aihub-probe-{uuid.uuid4().hex}"
        try:
            (probe / "tmp").mkdir(parents=True)
            (probe / "tmp" / marker).touch()
            (probe / "empty").mkdir()
            (probe / "hidden").mkdir()
            # both kinds of bind a launch uses: the private /tmp, and a read-only one (hiding the data dir)
            binds = [
                (str(probe / "empty"), str(probe / "hidden"), "ro"),
                (str(probe / "tmp"), "/tmp", "tree"),
            ]
            test = ["test", "-e", f"/tmp/{marker}"]
            child, _ = await self._launch(probe, probe / "log", "/", binds, test, _base_env("/"))
            try:
                async with asyncio.timeout(30):
                    await _ended(child)
            except TimeoutError:
                os.killpg(child.pid, signal.SIGKILL)
                await _ended(child)
                raise
            if _read_exit(probe) != "0":
                return _last_line(probe / "log") or "a bind mount in a new mount namespace did not work"
            return ""
        except (OSError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            await asyncio.to_thread(shutil.rmtree, probe, True)

    def _require_tools(self) -> _Tools:
        if self._tools is None:
            raise RuntimeError("LocalExecutor.probe() was not awaited")
        return self._tools

    # ------------------------------------------------------------------------------------------ start
    async def start(self, job: Job) -> Handle:
        if self._tools is None:
            await self.probe()
        _reap_orphans()
        scratch = self.work_root / job.key.slug
        if scratch.exists():  # started before (a server restart between start and record): same attempt
            existing = await self.find(job.key)
            if existing is not None:
                return existing
            await asyncio.to_thread(shutil.rmtree, scratch, True)
        job = self._out_of_private_paths(job)
        # file operations and the fork+exec run in a worker thread: on a slow disk they would otherwise
        # stall the event loop, and with it the hand-off of every other running node
        log_path, data = await asyncio.to_thread(self._prepare_attempt, job, scratch)
        try:
            binds = await self._prepare_filesystem(job, scratch, data)
            env = self._supervisor_env(self._node_env(job, scratch))
            argv = [*self._drop_privileges(), *job.argv]
            proc, data["start_time"] = await self._launch(
                scratch, log_path, data["workdir"], binds, argv, env
            )
        except (_LaunchError, OSError) as exc:
            message = str(exc) if isinstance(exc, _LaunchError) else f"could not launch: {exc}"
            return self._fail_launch(job.key, scratch, data, message)
        self._children[job.key.slug] = proc
        data["pid"] = proc.pid
        return Handle(self.name, job.key.slug, data)

    async def _launch(
        self,
        scratch: Path,
        log_path: Path,
        workdir: str,
        binds: list[Bind],
        argv: list[str],
        env: dict[str, str],
    ) -> tuple[_Child, int | None]:
        """Start the supervisor of ``argv`` (and its start time): through the launcher, which makes the
        namespace and the binds itself, or as a chain of ``[unshare] sh shim.sh`` that mounts them."""
        if self._launcher is not None:
            request = {
                "argv": [*self._shim_argv(scratch, None, workdir, []), *argv],
                "env": env,
                "scratch": str(scratch),
                "log": str(log_path),
                "binds": binds,
                "pid_namespace": self._pid_namespace,
            }
            launched = await self._launcher.launch(request)
            return launched, launched.start_time
        shim = self._shim_argv(scratch, log_path, workdir, binds)
        return await asyncio.to_thread(_spawn_and_stamp, [*self._unshare, *shim, *argv], env, scratch)

    def _out_of_private_paths(self, job: Job) -> Job:
        """A storage seen at its own host path inside a hidden directory (the local build of a module, under
        the data dir) is mounted at ``/opt/aihub/<name>`` instead, and the node's argv and working dir that
        point into it follow: what is hidden stays hidden, and the node user can reach it whatever the
        permissions of the directories above the data dir (``/root`` is 0700)."""
        if not self.isolated or not self.private_paths:
            return job
        argv, workdir, storages = list(job.argv), job.workdir, []
        for storage in job.storages:
            source = Path(storage.host_path or storage.path)
            inside = any(source.is_relative_to(p) for p in self.private_paths)
            if not inside or posixpath.normpath(storage.path) != str(source):
                storages.append(storage)
                continue
            seen = f"{PUBLIC_MOUNTS}/{storage.name}"
            storages.append(dataclasses.replace(storage, path=seen, host_path=str(source)))
            argv = [_rebase(part, str(source), seen) for part in argv]
            workdir = _rebase(workdir, str(source), seen)
        return dataclasses.replace(job, argv=argv, workdir=workdir, storages=storages)

    def _prepare_attempt(self, job: Job, scratch: Path) -> tuple[Path, dict[str, Any]]:
        log_path = self.logs.path(job.key.run_id, job.key.node, job.key.attempt)
        data = self._prepare_scratch(job, scratch, log_path)
        # said where the user looks: the node does not run in its image here (a module's local build stands for
        # its image, and runs)
        if job.image and not any(s.name == "module-build" for s in job.storages):
            _append_log(data, f"{IMAGE_NOT_USED} (image {job.image})")
        return log_path, data

    def _prepare_scratch(self, job: Job, scratch: Path, log_path: Path) -> dict[str, Any]:
        """Create the scratch dir and write ``meta.json``: everything a later ``find`` needs."""
        # Every file operation counts (a loaded disk makes each one cost): without isolation the attempt
        # needs nothing but the scratch dir itself.
        scratch.mkdir(mode=0o700, parents=True)
        if self.isolated:
            tmp = scratch / "tmp"
            tmp.mkdir()
            (tmp / "workflow_space").mkdir()
            os.chmod(tmp, 0o1777)  # like any /tmp
            if self.node_user is not None:
                os.chown(tmp / "workflow_space", *self.node_user)
        storages = [(posixpath.normpath(s.path), s.host_path or s.path) for s in job.storages]
        data: dict[str, Any] = {
            "scratch": str(scratch),
            "log": str(log_path),
            "key": {"run_id": job.key.run_id, "node": job.key.node, "attempt": job.key.attempt},
            "isolated": self.isolated,
            "isolation": self._isolation_text(job),
            "storages": storages if self.isolated else [],
            "outputs": [{"name": o.name, "path": o.path, "type": o.type} for o in job.outputs],
            "max_text": job.max_text_output,
            "argv": list(job.argv),
            "env_names": sorted(job.env),
            "workdir": job.workdir or WORKFLOW_SPACE,
            "image": job.image,
            "resources": _resources_json(job.resources),
            "labels": dict(job.labels),
            "started_at": datetime.now(UTC).isoformat(),
            "pid": None,
            "start_time": None,
        }
        (scratch / "meta.json").write_text(json.dumps(data))  # a fresh dir: no reader sees it half-written
        return data

    def _isolation_text(self, job: Job) -> str:
        if not self.isolated:
            return f"none ({self.isolation_reason}). WARNING: " + "; ".join(self.weaknesses)
        text = "mount namespace: private /tmp, /tmp/workflow_space"
        if self._pid_namespace:
            text += "; PID namespace: own /proc, leftovers killed at exit"
        if self.private_paths:
            text += "; hidden: " + ", ".join(str(p) for p in self.private_paths)
        if self.node_user is not None:
            text += f"; runs as uid {self.node_user[0]}, gid {self.node_user[1]}"
        if job.storages:
            text += ", storages " + ", ".join(
                f"{s.name} at {s.path}{' (read-only)' if s.read_only else ''}" for s in job.storages
            )
        if self._user_namespace:
            text += " (in a user namespace)"
        if self.weaknesses:
            text += ". WARNING: " + "; ".join(self.weaknesses)
        return text

    async def _prepare_filesystem(self, job: Job, scratch: Path, data: dict[str, Any]) -> list[Bind]:
        """Check storages, create mount points and the workdir, unpack input artifacts; returns the binds."""
        if not job.argv:
            raise _LaunchError("nothing to run: the command is empty")
        if self.isolated:
            binds = self._binds(job, scratch)
        else:
            binds = []
            self._check_storages_without_isolation(job)
            _ensure_workflow_space()
        resolve = self._resolver(data)
        for art in job.artifacts_in:
            try:
                async with self.artifacts.open(art.digest) as archive:
                    try:
                        target = resolve(art.path)
                        await asyncio.to_thread(unpack, archive, target)
                        await asyncio.to_thread(self._give_to_node, scratch, target)
                    except (ArtifactError, OSError, ValueError) as exc:
                        raise _LaunchError(
                            f"input '{art.name}': cannot unpack it at {art.path}: {exc}"
                        ) from exc
            except (ArtifactMissing, StoreError) as exc:
                raise _LaunchError(f"input '{art.name}': {exc}") from None
        if data["workdir"] != WORKFLOW_SPACE:
            try:
                workdir = resolve(data["workdir"])
                workdir.mkdir(parents=True, exist_ok=True)
                await asyncio.to_thread(self._give_to_node, scratch, workdir)
            except (OSError, ValueError) as exc:
                raise _LaunchError(f"working directory {data['workdir']}: {exc}") from exc
        return binds

    def _give_to_node(self, scratch: Path, path: Path) -> None:
        """Make what the executor put in the node's private /tmp the node user's, as if it had made it."""
        tmp = scratch / "tmp"
        if self.node_user is None or not path.is_relative_to(tmp):
            return
        uid, gid = self.node_user
        for parent in reversed(path.relative_to(tmp).parents[:-1]):  # the dirs made on the way
            os.chown(tmp / parent, uid, gid, follow_symlinks=False)
        os.chown(path, uid, gid, follow_symlinks=False)
        if path.is_dir() and not path.is_symlink():
            for root, dirs, files in os.walk(path):
                for name in (*dirs, *files):
                    os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)

    def _binds(self, job: Job, scratch: Path) -> list[Bind]:
        """The storages (parents first; those under /tmp are bound inside ``<scratch>/tmp``), then the
        private /tmp itself, recursively, so it carries them along."""
        binds: list[Bind] = []
        mounted: list[tuple[str, str]] = []
        for storage in sorted(job.storages, key=lambda s: posixpath.normpath(s.path)):
            source = _storage_source(storage)
            target = posixpath.normpath(storage.path)
            mountpoint = host_path(scratch, target, True, mounted)  # inside /tmp or an earlier storage
            mounted.append((target, str(source)))
            try:
                if source.is_dir():
                    mountpoint.mkdir(parents=True, exist_ok=True)
                else:
                    mountpoint.parent.mkdir(parents=True, exist_ok=True)
                    mountpoint.touch(exist_ok=True)
            except OSError as exc:
                raise _LaunchError(f"storage '{storage.name}': cannot create {target}: {exc}") from exc
            binds.append((str(source), str(mountpoint), "ro" if storage.read_only else "rw"))
        binds.append((str(scratch / "tmp"), "/tmp", "tree"))
        empty = str(self.work_root / ".empty")
        # (one under /tmp is out of sight already, and could not be found once the private /tmp is in place)
        binds.extend(
            (empty, str(path), "ro")
            for path in self.private_paths
            if not path.is_relative_to("/tmp") and path.is_dir()
        )
        return binds

    def _check_storages_without_isolation(self, job: Job) -> None:
        for storage in job.storages:
            host = posixpath.normpath(_storage_source(storage))
            path = posixpath.normpath(storage.path)
            if host != path:
                raise _LaunchError(
                    f"storage '{storage.name}' is at {host} on this host but nodes expect it at {path}; "
                    f"that needs mount isolation, which is unavailable: {self.isolation_reason}"
                )

    def _node_env(self, job: Job, scratch: Path) -> dict[str, str]:
        """Exactly the job's env, plus PATH/HOME/LANG defaults and the GPUs handed out (none by default).

        HOME is private to the attempt: the node's own /tmp/workflow_space, or without isolation the
        attempt's scratch dir (the shared host /tmp/workflow_space would mix attempts).
        """
        for name, value in job.env.items():
            if name.startswith(RESERVED_ENV_PREFIX):
                raise _LaunchError(f"environment variable {name}: names starting with _aihub_ are reserved")
            if not name or "=" in name or "\0" in name or "\0" in value:
                raise _LaunchError(f"environment variable {name!r}: invalid name or value")
        home = WORKFLOW_SPACE if self.isolated else str(scratch)
        env = {**_base_env(home), **job.env}
        env["CUDA_VISIBLE_DEVICES"] = ",".join(job.resources.gpu_devices)
        return env

    @staticmethod
    def _supervisor_env(node_env: dict[str, str]) -> dict[str, str]:
        """The node's env with LC_ALL=C for unshare(1) and mount(8): loading a locale costs them more than
        their real work. The supervisor gives the node its own LC_ALL back."""
        env = {**node_env, "LC_ALL": "C"}
        if "LC_ALL" in node_env:
            env["_aihub_lc_all"] = node_env["LC_ALL"]
        return env

    def _drop_privileges(self) -> list[str]:
        """setpriv(1) in front of the node's argv: the node user, no supplementary groups, no way back up."""
        if self.node_user is None:
            return []
        uid, gid = self.node_user
        setpriv = self._require_tools().setpriv
        assert setpriv is not None  # node_user is only set when it was found
        return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs", "--"]

    def _shim_argv(self, scratch: Path, log_path: Path | None, workdir: str, binds: list[Bind]) -> list[str]:
        """``sh shim.sh ...`` up to its ``--``; ``log_path`` None: the launcher opened the log already."""
        tools = self._require_tools()
        mount = tools.mount if binds and tools.mount else "-"
        flat = [part for bind in binds for part in bind]
        paths = (scratch, log_path or "/", workdir)
        relative = [str(p) for p in paths if not Path(p).is_absolute()]
        if relative:  # the supervisor changes directory before it opens them
            raise ValueError(f"the supervisor needs absolute paths, got {', '.join(relative)}")
        return [
            tools.sh,
            str(SHIM),
            str(scratch),
            str(log_path or "-"),
            workdir,
            mount,
            str(len(binds)),
            *flat,
            "--",
        ]

    def _fail_launch(self, key: JobKey, scratch: Path, data: dict[str, Any], message: str) -> Handle:
        """An attempt that could not start still gets a handle; ``wait`` reports the message."""
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
            pid = await asyncio.to_thread(_find_supervisor, scratch)
            if pid is not None:
                data["pid"], data["start_time"] = pid, _start_time(pid)
            elif not (scratch / "exit").exists():  # (it may have ended meanwhile: status first, then exit)
                return None  # never started, or gone without a trace (the host restarted)
        return Handle(self.name, key.slug, data)

    # ------------------------------------------------------------------------------------------- wait
    async def wait(self, handle: Handle) -> ExitReport:
        return await self._waits.wait(handle.id, lambda: self._wait(handle))

    def _elsewhere(self, handle: Handle) -> bool:
        """The attempt was started by an executor with another work root: another data dir, or another host
        (a run taken over from an engine worker that died). Its files and processes are not this one's."""
        return not Path(handle.data["scratch"]).is_relative_to(self.work_root)

    async def _wait(self, handle: Handle) -> ExitReport:
        scratch = Path(handle.data["scratch"])
        if self._elsewhere(handle):
            return ExitReport(None, error=ELSEWHERE.format(scratch=scratch))
        # A report is saved only when outputs were collected (anything else can be read again from the
        # status files); one of our own children has none yet.
        saved = None if handle.id in self._children else read_json(scratch / "report.json")
        if saved is None:
            child = self._children.get(handle.id)  # (forgotten once reaped)
            await self._until_ended(handle)
            if _read_exit(scratch) is None and (scratch / "stop").exists():
                _record_stopped_supervisor(child, scratch)
            report = await self._report(handle.data, scratch)
            if handle.data["outputs"]:
                write_json(scratch / "report.json", report.to_json())
        else:
            report = ExitReport.from_json(saved)
        # removed off the hand-off path (again after a crash between saving and removing: harmless)
        self._clean_later(scratch / "tmp")
        return report

    def _clean_later(self, path: Path) -> None:
        task = asyncio.create_task(_remove_tree(path), name=f"clean {path}")
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def settle(self) -> None:
        """Wait for the background removal of finished attempts' private /tmp (tests, shutdown)."""
        await asyncio.gather(*list(self._cleanups), return_exceptions=True)

    async def _report(self, data: dict[str, Any], scratch: Path) -> ExitReport:
        stopped = (scratch / "stop").exists()
        report = ExitReport(None, started_at=datetime.fromisoformat(data["started_at"]), stopped=stopped)
        status, report.finished_at = _read_exit_with_time(scratch)
        if status is None:
            report.error = VANISHED
        elif status.startswith("error:"):
            report.error = status.removeprefix("error:").strip()
        elif not status.isdigit():
            report.error = f"unreadable exit status {status!r}"
        else:
            report.exit_code = int(status)
            if report.exit_code == 0 and not stopped:
                decls = [OutputDecl(**o) for o in data["outputs"]]
                report.outputs, report.error = await collect_outputs(
                    decls, self._resolver(data), self.artifacts, data["max_text"], tmp_dir=scratch
                )
        return report

    def _resolver(self, data: dict[str, Any]) -> Callable[[str], Path]:
        """node path -> host path for this attempt, following the node's symlinks."""
        scratch = Path(data["scratch"])
        isolated = bool(data["isolated"])
        storages = [(str(node), str(host)) for node, host in data["storages"]]

        def resolve(node_path: str) -> Path:
            real = node_realpath(scratch, node_path, isolated, storages)
            return host_path(scratch, real, isolated, storages)

        return resolve

    async def _until_ended(self, handle: Handle) -> None:
        """Return once the supervisor has ended (reaping it when it is our child)."""
        pid, start_time = handle.data.get("pid"), handle.data.get("start_time")
        if pid is None:
            return
        child = self._children.get(handle.id)
        if child is not None and child.pid != pid:
            child = None
        if isinstance(child, Launched):
            await child.ended.wait()
            self._children.pop(handle.id, None)
            if child.returncode is not None:
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
                await _readable(fd)
        finally:
            os.close(fd)
        if child is not None:
            child.poll()
            self._children.pop(handle.id, None)

    async def _poll_until_ended(
        self, slug: str, child: _Child | None, pid: int, start_time: int | None
    ) -> None:
        interval = 0.001
        while (child.poll() is None) if child is not None else _alive(pid, start_time):
            await asyncio.sleep(interval)
            interval = min(interval * 2, _POLL_MAX)
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
        if self._launcher is not None:  # (the supervisors it started keep running)
            await self._launcher.close()


# ---------------------------------------------------------------------------------------------- helpers


def _resources_json(resources: Resources) -> dict[str, Any]:
    # By hand: dataclasses.asdict's deep copy is a measurable part of a start.
    return {
        **vars(resources),
        "gpu_devices": list(resources.gpu_devices),
        "node_selector": dict(resources.node_selector),
    }


def _append_log(data: dict[str, Any], message: str) -> None:
    """A line of the platform's own in the attempt's log, where users look for what happened."""
    with contextlib.suppress(OSError, KeyError), open(data["log"], "a") as f:
        f.write(f"aihub: {message}\n")


def _storage_source(storage: StorageMount) -> Path:
    source = Path(storage.host_path or storage.path)
    if not source.exists():
        raise _LaunchError(f"storage '{storage.name}': {source} does not exist on this host")
    return source


def _record_stopped_supervisor(child: _Child | None, scratch: Path) -> None:
    """A stop's signal ended the supervisor before it recorded anything (it was still starting, or a SIGKILL
    took it): record the signal, as the supervisor would have (128 + N)."""
    code = child.poll() if child is not None else None
    if code is not None and code < 0:  # unshare ends with its child's signal
        _write_exit(scratch, str(128 - code))


def _rebase(value: str, old: str, new: str) -> str:
    """``value`` with its leading path ``old`` replaced by ``new`` (other values unchanged)."""
    if value == old:
        return new
    return new + value[len(old) :] if value.startswith(old.rstrip("/") + "/") else value


def _lookup_user(spec: str) -> tuple[int, int]:
    """``NAME``, ``UID`` or ``UID:GID`` as (uid, gid); a name's own group when no gid is given."""
    import pwd

    name, _, group = spec.partition(":")
    try:
        entry = pwd.getpwuid(int(name)) if name.isascii() and name.isdigit() else pwd.getpwnam(name)
        uid, gid = entry.pw_uid, entry.pw_gid
    except KeyError:
        if not (name.isascii() and name.isdigit()):
            raise ValueError(f"AIHUB_LOCAL_RUN_AS: there is no user {name!r} on this host") from None
        uid, gid = int(name), int(name)
    if group:
        if not (group.isascii() and group.isdigit()):
            raise ValueError(f"AIHUB_LOCAL_RUN_AS: the group of {spec!r} must be a number")
        gid = int(group)
    if uid == 0:
        raise ValueError(
            "AIHUB_LOCAL_RUN_AS: nodes may not run as root; use 'server' to run them as the server"
        )
    return uid, gid


def _base_env(home: str) -> dict[str, str]:
    return {"PATH": DEFAULT_PATH, "HOME": home, "LANG": "C.UTF-8"}


def _read_exit(scratch: Path) -> str | None:
    """The recorded status, or None while there is none (an empty file is one being written)."""
    return _read_exit_with_time(scratch)[0]


def _read_exit_with_time(scratch: Path) -> tuple[str | None, datetime]:
    """The recorded status and when it was written (now, when there is none)."""
    try:
        with open(scratch / "exit", "rb") as f:
            text = f.read().decode(errors="replace").strip()
            written = datetime.fromtimestamp(os.fstat(f.fileno()).st_mtime, UTC)
    except OSError:
        return None, datetime.now(UTC)
    return text or None, written


def _write_exit(scratch: Path, status: str) -> None:
    tmp = scratch / ".exit.tmp"
    tmp.write_text(status + "\n")
    os.replace(tmp, scratch / "exit")


def _ensure_workflow_space() -> None:
    path = Path(WORKFLOW_SPACE)
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o1777)


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _spawn_and_stamp(
    argv: list[str], env: dict[str, str], cwd: Path
) -> tuple[subprocess.Popen[bytes], int | None]:
    proc = _spawn(argv, env, cwd)
    return proc, _start_time(proc.pid)


def _spawn(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """Start the supervisor in its own session (a fork+exec: well under a millisecond, so inline)."""
    return subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=cwd,
    )


async def _ended(child: _Child) -> None:
    """Return once ``child`` has ended (reaped: by the launcher, or here)."""
    if isinstance(child, Launched):
        await child.ended.wait()
    else:
        await asyncio.to_thread(child.wait)


async def _remove_tree(path: Path) -> None:
    """Remove the attempt's private /tmp; the usual nearly-empty one without a thread hop."""
    if not _remove_if_nearly_empty(path):
        await asyncio.to_thread(shutil.rmtree, path, True)


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
