"""How the local executor starts an attempt's supervisor on this host: decided once, by a probe.

The supervisor is ``shim.sh`` (see :mod:`aihub.engine.executors.local`). Where nodes can be isolated, the probe
finds the best way that really works here (:func:`_isolation_ways`: the launcher's own system calls as root,
``unshare(1)`` as root or in a user namespace; a PID namespace where possible), whom nodes run as
(``AIHUB_LOCAL_RUN_AS``), and what the host cannot give them (``weaknesses``, said at start and in every
node's container tab). :meth:`Supervisors.launch` then starts each supervisor that way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aihub.engine.executors import launcher as launcher_module
from aihub.engine.executors.base import Job
from aihub.engine.executors.launcher import Launched, LauncherClient
from aihub.engine.executors.processes import child_ended, readable

log = logging.getLogger("aihub.engine.executors.local")  # (the executor's name, as operators know it)

SHIM = Path(__file__).with_name("shim.sh")
WORKFLOW_SPACE = "/tmp/workflow_space"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PID_NAMESPACE = ["--pid", "--fork", "--kill-child", "--mount-proc"]  # the namespace ends with unshare
_TOOL_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"])


class Spawned(subprocess.Popen[bytes]):
    """A supervisor started here, not by the launcher (an ``unshare(1)`` chain, or no isolation), followed as the
    launcher follows its own (:class:`~aihub.engine.executors.launcher.Launched`): its stdin is the write end of
    a report pipe, on which the shim writes a word once it has recorded the node's status and killed what the
    node left (as PID 1 of a PID namespace: before the kernel takes the namespace down). :meth:`follow` waits
    for that word, then for the process's end, without a worker thread."""

    report = -1  # the report pipe's read end (non-blocking), until followed
    reported = False  # the shim said so itself (else ``recorded`` was set by its end)
    recorded_at: float | None = None  # when its word was read: the node's end, on the fine clock

    def follow(self) -> None:
        """Start following it (on the event loop): ``recorded`` is set at its word or its end, ``ended`` at its
        end (reaped)."""
        self.recorded, self.ended = asyncio.Event(), asyncio.Event()
        self._follower = asyncio.create_task(self._follow(), name=f"supervisor {self.pid}")

    async def _follow(self) -> None:
        report, self.report = self.report, -1
        try:
            if report >= 0:
                await readable(report)
                with contextlib.suppress(OSError):
                    if os.read(report, 64):
                        self.reported, self.recorded_at = True, time.time()
                        self.recorded.set()
            await child_ended(self)
        finally:
            if report >= 0:
                os.close(report)
            self.recorded.set()
            self.ended.set()


# A supervisor this executor started: its own child (the unshare(1) chain, or no isolation), or one the
# launcher started (which reaps it and says how it ended).
_Child = subprocess.Popen[bytes] | Launched
#: supervisors whose word is followed (``recorded``, ``recorded_at``, ``ended``)
_WATCHED = (Launched, Spawned)
Bind = tuple[str, str, str]  # (host source, mount point, "rw" | "ro" | "tree")


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


#: where the kernel says whether a user that is not root may have a user namespace of its own
SYSCTL = Path("/proc/sys/kernel")
#: sysctl -> the value that forbids it: AppArmor's restriction (Ubuntu 23.10 and later), Debian's older switch
_USERNS_OFF = {"apparmor_restrict_unprivileged_userns": "1", "unprivileged_userns_clone": "0"}


def user_namespace_restriction(sysctl: Path | None = None) -> str:
    """Why a server that is not root gets no user namespace here, said so that an operator can act ("" when no
    known switch forbids it). ``sysctl``: :data:`SYSCTL`."""
    for name, off in _USERNS_OFF.items():
        try:
            value = ((sysctl or SYSCTL) / name).read_text().strip()
        except OSError:
            continue
        if value == off:
            return (
                f"this kernel forbids user namespaces to users that are not root (kernel.{name}={value}): "
                "run the server as root, or allow them (docs/engine.md, 'Private /tmp')"
            )
    return ""


def _isolation_ways(tools: _Tools, root: bool) -> list[_Way]:
    """The ways to try, best first: a PID namespace before none (its own /proc, and whatever a node leaves
    running dies with it); the launcher (root) before unshare(1) as root; then
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


class Supervisors:
    """The way this host starts supervisors (probed once), and the starting itself."""

    def __init__(
        self, work_root: Path, *, isolation: Literal["auto", "off"], run_as: str, private_paths: list[Path]
    ) -> None:
        self.work_root = work_root
        self.isolation_mode = isolation
        self.run_as = run_as
        # hidden from nodes (an empty, read-only directory is mounted over each): the data dir, so the
        # database, logs, artifacts and other attempts' scratch dirs are out of a node's reach
        self.private_paths = private_paths
        self.node_user: tuple[int, int] | None = None  # (uid, gid) nodes run as; None: the server's own
        self.weaknesses: list[str] = []  # what this host cannot give nodes, said at start and per node
        self.isolated = False
        self.isolation_reason = "not probed yet"
        self.pid_namespace = False
        self.user_namespace = False
        self.tools: _Tools | None = None
        self.unshare: list[str] = []  # the unshare(1) command a supervisor starts in, without the launcher
        self.launcher: LauncherClient | None = None  # starts supervisors in new namespaces, when root

    async def probe(self) -> None:
        """Find the tools and decide, once, whether nodes get a private mount namespace."""
        self.tools = _Tools.find()
        self.work_root.mkdir(parents=True, exist_ok=True)
        await self.forget()
        if self.isolation_mode == "off":
            self.isolation_reason = "disabled by configuration (AIHUB_LOCAL_ISOLATION=off)"
        else:
            self.isolation_reason = await self._probe_isolation(self.tools)
        try:
            self.node_user = self._node_user(self.tools)
        except (ValueError, RuntimeError):  # (a bad AIHUB_LOCAL_RUN_AS: the server does not start)
            await self.forget()
            raise
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
        if os.geteuid() != 0 or self.user_namespace:
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
        elif not self.pid_namespace:
            weak.append(
                "no PID namespace: nodes see this host's processes, and what they detach outlives them"
            )
        if self.node_user is None:
            who = "root" if os.geteuid() == 0 else "the server's user"
            why = (
                "AIHUB_LOCAL_RUN_AS=server"
                if self.run_as == "server"
                else self._why_not_another_user(self.require_tools())
            )
            weak.append(f"nodes run as {who} ({why}): they can read whatever that user can")
        return weak

    def _make_empty_dir(self) -> None:
        empty = self.work_root / ".empty"
        empty.mkdir(mode=0o555, exist_ok=True)

    async def forget(self) -> None:
        self.isolated = self.pid_namespace = self.user_namespace = False
        self.unshare = []
        if self.launcher is not None:
            await self.launcher.close()
            self.launcher = None

    async def _probe_isolation(self, tools: _Tools) -> str:
        """Use the first way of isolating nodes that really works here (see :func:`_isolation_ways`)."""
        reason = "unshare(1) or mount(8) not found"
        for way in _isolation_ways(tools, root=os.geteuid() == 0):
            self.launcher = LauncherClient() if way.launcher else None
            self.unshare, self.pid_namespace = list(way.unshare), way.pid_namespace
            self.user_namespace = "--map-root-user" in way.unshare
            reason = await self._try_isolation()
            if not reason:
                self.isolated = True
                return ""
            await self.forget()
        hint = "" if os.geteuid() == 0 else user_namespace_restriction()
        return f"{reason}; {hint}" if hint else reason

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
            child, _ = await self.launch(probe, probe / "log", "/", binds, test, _base_env("/"))
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

    def require_tools(self) -> _Tools:
        if self.tools is None:
            raise RuntimeError("LocalExecutor.probe() was not awaited")
        return self.tools

    async def launch(
        self,
        scratch: Path,
        log_path: Path,
        workdir: str,
        binds: list[Bind],
        argv: list[str],
        env: dict[str, str],
        *,
        spare: Path | dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> tuple[_Child, int | None]:
        """Start the node ``argv`` (the node user's, ``env`` its supervisor's: see :meth:`supervisor_env`) and
        return its process and start time: through the launcher, which makes the namespace and the binds
        itself, and starts the node in a warm sandbox (where it can, the node itself) or its supervisor; or as
        a chain of ``[unshare] sh shim.sh`` that mounts them. ``spare``: the launcher first puts ``scratch`` in
        place — renames that dir to it, or, given the launcher's ``make`` (see launcher.py), makes it — and
        writes ``meta`` there as ``meta.json``."""
        if self.launcher is not None:
            request = self._request(scratch, log_path, workdir, binds, argv, env)
            if spare is not None:
                place = {"make": spare} if isinstance(spare, dict) else {"spare": str(spare)}
                request |= place | {"meta": json.dumps(meta)}
            launched = await self.launcher.launch(request)
            return launched, launched.start_time
        argv = [*self.drop_privileges(), *argv]
        shim = self.shim_argv(scratch, log_path, workdir, binds)
        spawned, start_time = await asyncio.to_thread(
            _spawn_and_stamp, [*self.unshare, *shim, *argv], env, scratch, fstab(binds)
        )
        spawned.follow()
        return spawned, start_time

    def _request(
        self,
        scratch: Path,
        log_path: Path,
        workdir: str,
        binds: list[Bind],
        argv: list[str],
        env: dict[str, str],
    ) -> dict[str, Any]:
        """The launcher's request (see launcher.py): the supervisor's argv, and the node's alone (``at``) for
        the launcher to start without it."""
        shim = [*self.shim_argv(scratch, None, workdir, []), *self.drop_privileges()]
        request = {
            "argv": [*shim, *argv],
            "env": env,
            "scratch": str(scratch),
            "log": str(log_path),
            "binds": binds,
            "pid_namespace": self.pid_namespace,
        }
        if self.sandboxes:  # (only a sandbox starts the node without the supervisor)
            request["node"] = {"at": len(shim), "workdir": workdir, "user": self.node_user}
        return request

    @property
    def sandboxes(self) -> bool:
        """Nodes start in the launcher's warm sandboxes (see launcher.py)."""
        return self.launcher is not None and self.pid_namespace and launcher_module.WARM_SANDBOXES

    def drop_privileges(self) -> list[str]:
        """setpriv(1) in front of the node's argv: the node user, no supplementary groups, no way back up."""
        if self.node_user is None:
            return []
        setpriv = self.require_tools().setpriv
        assert setpriv is not None  # node_user is only set when it was found
        user, group = _setpriv_ids(*self.node_user)
        return [setpriv, f"--reuid={user}", f"--regid={group}", "--clear-groups", "--no-new-privs", "--"]

    @staticmethod
    def supervisor_env(node_env: dict[str, str]) -> dict[str, str]:
        """The node's env with LC_ALL=C for unshare(1) and mount(8): loading a locale costs them more than
        their real work. The supervisor gives the node its own LC_ALL back."""
        env = {**node_env, "LC_ALL": "C"}
        if "LC_ALL" in node_env:
            env["_aihub_lc_all"] = node_env["LC_ALL"]
        return env

    def shim_argv(self, scratch: Path, log_path: Path | None, workdir: str, binds: list[Bind]) -> list[str]:
        """``sh shim.sh ...`` up to its ``--``; ``log_path`` None: the launcher opened the log already."""
        tools = self.require_tools()
        # with the launcher (no log_path), mount(8) for a /proc the launcher may leave to the supervisor
        mount = tools.mount if (binds or log_path is None) and tools.mount else "-"
        paths = (scratch, log_path or "/", workdir)
        relative = [str(p) for p in paths if not os.path.isabs(p)]
        if relative:  # the supervisor changes directory before it opens them
            raise ValueError(f"the supervisor needs absolute paths, got {', '.join(relative)}")
        return [
            tools.sh,
            str(SHIM),
            str(scratch),
            str(log_path or "-"),
            workdir,
            mount,
            "fstab" if binds else "0",  # (the binds themselves: ``fstab``, written beside)
            "--",
        ]

    def isolation_text(self, job: Job) -> str:
        if not self.isolated:
            return f"none ({self.isolation_reason}). WARNING: " + "; ".join(self.weaknesses)
        text = "mount namespace: private /tmp, /tmp/workflow_space"
        if self.pid_namespace:
            text += "; PID namespace: own /proc, leftovers killed at exit"
        if self.private_paths:
            text += "; hidden: " + ", ".join(str(p) for p in self.private_paths)
        if self.node_user is not None:
            text += f"; runs as uid {self.node_user[0]}, gid {self.node_user[1]}"
        if job.storages:
            text += ", storages " + ", ".join(
                f"{s.name} at {s.path}{' (read-only)' if s.read_only else ''}" for s in job.storages
            )
        if self.user_namespace:
            text += " (in a user namespace)"
        if self.weaknesses:
            text += ". WARNING: " + "; ".join(self.weaknesses)
        return text

    async def close(self) -> None:
        """Let the launcher go (the supervisors it started keep running)."""
        if self.launcher is not None:
            await self.launcher.close()


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


@functools.cache
def _setpriv_ids(uid: int, gid: int) -> tuple[str, str]:
    """setpriv's ``--reuid``/``--regid`` values for ``uid``/``gid``: their names where those stand for exactly
    these ids, else the numbers. setpriv looks each value up as a name first (``getpwnam``, ``getgrnam``): a
    number is found in no file, so every NSS module is loaded and asked (here ``libnss_systemd`` and the two
    libraries it needs), a quarter of setpriv's CPU — a quarter of a millisecond per node. (Looked up once;
    the numbers, too, stand for whichever entry is *named* so, should one be.)"""
    import grp
    import pwd

    user, group = str(uid), str(gid)
    with contextlib.suppress(KeyError):
        name = pwd.getpwuid(uid).pw_name
        if pwd.getpwnam(name).pw_uid == uid:
            user = name
    with contextlib.suppress(KeyError):
        name = grp.getgrgid(gid).gr_name
        if grp.getgrnam(name).gr_gid == gid:
            group = name
    return user, group


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


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


#: mount(8)'s options for each kind of bind (``ro``: nosuid,nodev too, see shim.sh)
_BIND_OPTIONS = {"tree": "rbind", "ro": "bind,ro,nosuid,nodev", "rw": "bind"}


def fstab(binds: list[Bind]) -> str:
    """The binds as fstab(5) lines, for the supervisor's one ``mount --all --fstab``: in order, each path's
    blanks and backslashes escaped as fstab(5) says (``\\040`` ...), so that every path stays one field."""
    return "".join(
        f"{_fstab_field(source)} {_fstab_field(target)} none {_BIND_OPTIONS[mode]} 0 0\n"
        for source, target, mode in binds
    )


def _fstab_field(path: str) -> str:
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


def _spawn_and_stamp(
    argv: list[str], env: dict[str, str], cwd: Path, binds: str = ""
) -> tuple[Spawned, int | None]:
    """Write the supervisor's ``fstab`` (``binds``, if any) in ``cwd``, its scratch dir, and start it."""
    if binds:
        (cwd / "fstab").write_bytes(os.fsencode(binds))  # (paths are bytes to the kernel)
    proc = _spawn(argv, env, cwd)
    return proc, _start_time(proc.pid)


def _spawn(argv: list[str], env: dict[str, str], cwd: Path) -> Spawned:
    """Start the supervisor in its own session, its stdin the write end of its report pipe (the shim keeps it
    as fd 4 and gives the node /dev/null)."""
    report, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        proc = Spawned(
            argv,
            env=env,
            stdin=write_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd=cwd,
        )
    except BaseException:
        os.close(report)
        raise
    finally:
        os.close(write_end)
    os.set_blocking(report, False)
    proc.report = report
    return proc


async def _ended(child: _Child) -> None:
    """Return once ``child`` has ended (reaped: by the launcher, or here)."""
    if isinstance(child, _WATCHED):
        await child.ended.wait()
    else:
        await child_ended(child)


async def _recorded(child: _Child) -> None:
    """Return once ``child`` has recorded its node's status and killed what the node left, which is what the
    executor waits for: the supervisor's word, before its namespaces are gone."""
    if isinstance(child, _WATCHED):
        await child.recorded.wait()
    else:
        await child_ended(child)


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
