"""The local executor's launcher: one small process that starts nodes in warm sandboxes, or supervisors in new
namespaces.

Run as ``python -I launcher.py`` by :class:`~aihub.engine.executors.local.LocalExecutor` when the server is
root; standard library only, so it starts without the server's packages (tens of milliseconds, once).

Why a process of its own: a node's supervisor must be PID 1 of a new PID namespace and see a private mount
table (its own ``/tmp`` and ``/proc``, storages, the data dir hidden). ``unshare(1)`` plus one ``mount(8)`` per
bind did that in five processes per node; the server cannot make the calls itself (a namespace change of one of
its threads would be a mess, and a fork of a threaded process may not run Python); and a Python ``fork`` per
node costs as much CPU as the processes it saves. This process has one thread, so per launch it changes *its
own* namespaces, starts the supervisor with ``posix_spawn`` (a vfork: no copy of this process), and goes back:

1. ``unshare(CLONE_NEWPID)`` — its next child is PID 1 of a fresh PID namespace; ``unshare(CLONE_NEWNS)`` — a
   mount namespace of its own, with private propagation;
2. changes to the scratch dir and opens the log (before any mount can hide the data dir they are in), applies
   the binds in order with the flags ``shim.sh`` gives mount(8) (``tree``: recursive; ``ro``: bound, then
   remounted ``ro,nosuid,nodev``; ``rw``);
3. spawns ``sh shim.sh SCRATCH - ...`` in a new session: stdin ``/dev/null``, stdout and stderr the log, default
   signal dispositions (but glibc's own internal signals 32 and 33, which its ``posix_spawn`` leaves ignored
   and no glibc program can use), on fd 3 a pipe, the *gate*, and on fd 4 the write end of another, the
   *report pipe*;
4. mounts a ``/proc`` of the new PID namespace (``pidns=``, Linux 6.15 and later; possible only once its PID 1
   exists), then writes ``ok`` to the gate — or the error, which the supervisor records in ``exit`` (``error:
   could not mount SRC at DST (see the log)``, the reason in the log) instead of running the node. A kernel
   without ``pidns=`` (it refuses the option: EINVAL) gets ``proc`` on the gate instead, from then on: the
   supervisor, inside the namespace, mounts its ``/proc`` with mount(8), as ``unshare --mount-proc`` does;
5. returns to its own mount and PID namespaces (``setns``), and later reaps the supervisor and reports its end.

With ``--warm-sandboxes`` (which the server gives it by default: see :class:`Sandbox`), a node that gets a PID
namespace runs in a *warm sandbox* instead: a fork of this process that is PID 1 of namespaces made once
and lent to one node at a time. This process hands it the request; the sandbox puts the scratch dir in place,
makes the binds, starts the node itself as its own child (:func:`_spawn_node`; ``shim.sh`` where anything is
unusual), records its status in ``exit``, cleans up after it, and writes the lines below itself, on the
server's *lines pipe* (``--lines-fd``), not through this process.

The end is reported twice. A supervisor that is PID 1 of its PID namespace writes a line on the report pipe
once it has recorded the node's status (its ``exit`` file) and SIGKILLed everything else in the namespace:
that is ``ended``, and the server may go on (collect the outputs, start the next node). The supervisor's own
exit comes later: the kernel first waits for every process of the namespace to be gone, then takes the
namespaces down (their mounts, their ``/proc``) — a few milliseconds on a busy machine, which no hand-off
has to wait for any more. ``exited`` follows once it is reaped. A supervisor killed before it wrote the line
(or one without a PID namespace, whose group kill takes itself along) only gets ``exited``.

Nothing here is parsed as shell code: the request's argv, env and paths go to ``posix_spawn`` as they are.

Protocol (one JSON object or one line of words per line, on stdin, and on stdout or, for a node started in a
sandbox, the lines pipe; it ends at stdin's end; a line may come twice, from a sandbox and again from this
process once that sandbox ended: the second is to be ignored):

- request ``{"id": N, "argv": [...], "env": {...}, "scratch": S, "log": L, "binds": [[SRC, DST, MODE], ...],
  "pid_namespace": bool}``, and optionally ``"spare": P, "meta": TEXT``: first rename the directory P (made
  ahead by the server) to S, write TEXT to ``S/meta.json`` and make the directory of L; or ``"make": {"spares":
  D, "owner": [UID, GID] or null}, "meta": TEXT``: the same, but S is made here, with its private ``tmp`` (a
  sandbox renames one it made ahead in D between two nodes, where it has one); and ``"node": {"at":
  K, "workdir": W, "user": [UID, GID] or null}``: ``argv[K:]`` is the node's own argv, which a sandbox may
  start without the supervisor (the node's environment is ``env`` with its own ``LC_ALL``)
- ``started N PID START_TIME`` (``/proc/PID/stat`` field 22) or ``failed N MESSAGE``; PID is the supervisor's,
  or the node's where a sandbox started it without one (its process group's, in both cases). Replies come in
  the order the starts are done, which for sandboxes need not be the order of the requests
- ``ended PID TIME``: the supervisor PID recorded the node's status and killed what the node left; it is
  still exiting (always before its ``exited``, and never for a supervisor that did not write its report
  line). TIME (seconds since the epoch) is when this process read that line: the node's end to within the
  supervisor's last steps, where the ``exit`` file's mtime is the kernel's coarse clock (a tick, and late);
  for a node a sandbox started itself, when the sandbox reaped it (and ``exited`` follows at once);
- ``exited PID CODE``: the supervisor PID ended; CODE is its exit status, or minus the signal that killed it
  (as :attr:`subprocess.Popen.returncode`); ``exited PID CODE node``: the node a sandbox started itself
  ended so, and the sandbox recorded that in ``exit`` (CODE, or 128 + N for signal N) before it said so.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import itertools
import json
import os
import select
import selectors
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_NO_NEW_PRIVS = 38
GATE_FD = 3
REPORT_FD = 4
#: start launchers that leave each namespace's /proc to its supervisor, as on kernels before 6.15 (tests)
PROC_BY_SUPERVISOR = False
#: start launchers that run nodes in warm sandboxes (the default; False: new namespaces for each node, as
#: for a request too large for a sandbox; tests and benchmarks)
WARM_SANDBOXES = True
# what Python or this process changed (SIG_IGN survives exec): the supervisor and the node get the defaults
DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD)


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library's mount, unshare and setns (Linux; loaded in the launcher only, so the server also imports
    this module where they do not exist)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.unshare.argtypes = [ctypes.c_int]
    libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return libc


_own: dict[int, int] = {}  # namespace type -> an fd of this process's own namespace of that type


class SetupError(Exception):
    """A step of the namespace set-up failed (the message names it and the kernel's reason)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.errno = code


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(code)}", code)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(value: str | None) -> bytes | None:
        return None if value is None else os.fsencode(value)

    _check(_libc().mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount: {target}")


def bind(source: str, target: str, mode: str) -> None:
    """One bind of the supervisor's list, with the flags ``shim.sh`` gives mount(8)."""
    if mode == "tree":
        mount(source, target, None, MS_BIND | MS_REC)
    elif mode == "ro":
        # nosuid,nodev too: in a user namespace those of the outer mount are locked (see shim.sh)
        mount(source, target, None, MS_BIND)
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    else:
        mount(source, target, None, MS_BIND)


@contextlib.contextmanager
def own_namespaces(pid_namespace: bool) -> Iterator[None]:
    """This process in a new mount namespace (private propagation), its children in a new PID namespace
    when asked; both set back to its own on the way out (the kernel refuses a second CLONE_NEWPID while
    children still go elsewhere). A failure to go back ends this process: the server starts a new one."""
    for kind in (CLONE_NEWNS, CLONE_NEWPID):
        _own_namespace(kind)
    kinds = [CLONE_NEWPID] if pid_namespace else []
    try:
        if pid_namespace:
            _check(_libc().unshare(CLONE_NEWPID), "unshare")
        _check(_libc().unshare(CLONE_NEWNS), "unshare")
        kinds.append(CLONE_NEWNS)
        mount("none", "/", None, MS_REC | MS_PRIVATE)
        yield
    finally:
        for kind in kinds:
            if _libc().setns(_own[kind], kind) != 0:
                os._exit(70)


def _own_namespace(kind: int) -> int:
    """An fd of this process's own namespace of ``kind`` (opened once, before any change)."""
    if kind not in _own:
        name = "mnt" if kind == CLONE_NEWNS else "pid"
        _own[kind] = os.open(f"/proc/self/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    return _own[kind]


def _open_log(path: str) -> int:
    """The attempt's log, for the supervisor's or the node's output (appended to)."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)


def bind_all(binds: list[list[str]], log: int) -> str:
    """Apply the binds in order; "" or the status the supervisor records (the reason goes to the log)."""
    for source, target, mode in binds:
        try:
            bind(source, target, mode)
        except SetupError as exc:
            os.write(log, f"{exc}\n".encode(errors="replace"))
            return f"error: could not mount {source} at {target} (see the log)"
    return ""


#: the supervisor mounts its namespace's /proc itself (the gate says ``proc``): the kernel knows no ``pidns=``
#: (before Linux 6.15: found out at the first launch), or the server asked (``--proc-by-supervisor``)
_proc_by_supervisor = False


def mount_proc(pid: int, log: int) -> str:
    """The /proc of the PID namespace whose PID 1 is ``pid`` (as ``unshare --mount-proc`` mounts it): "" once
    mounted, ``proc`` when the supervisor is to mount it from inside, or the status to record instead."""
    global _proc_by_supervisor
    if _proc_by_supervisor:
        return "proc"
    try:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV, f"pidns=/proc/{pid}/ns/pid")
    except SetupError as exc:
        if exc.errno == errno.EINVAL:  # an option this kernel does not know: from inside, as before 6.15
            _proc_by_supervisor = True
            return "proc"
        os.write(log, f"{exc}\n".encode(errors="replace"))
        return "error: could not mount /proc for the node's PID namespace (see the log)"
    return ""


def put_in_place(request: dict[str, Any]) -> None:
    """The attempt's scratch dir — the server's spare renamed into place (``spare``), or made here (``make``) —
    with the server's ``meta.json``, and the directory of its log (done here, in this process, so that the
    server's start makes no trip to a worker thread for them). Without either, with ``meta`` (a start handed
    to a second sandbox after the first ended under it): what the first may have left undone."""
    scratch, log = request["scratch"], request["log"]
    meta = os.path.join(scratch, "meta.json")
    if "spare" in request:
        os.rename(request["spare"], scratch)
    elif "make" in request:
        make_scratch(scratch, request["make"])
    elif "meta" not in request or os.path.lexists(meta):
        # (with ``meta`` alone: a start retried after its sandbox ended, which had put the dir in place and
        # may have died before it wrote ``meta.json`` or made the log's directory)
        return
    os.makedirs(os.path.dirname(log), exist_ok=True)
    fd = os.open(meta, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        data = request["meta"].encode()
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)


#: a scratch dir made ahead by this sandbox between two nodes, and for what (``make``'s ``spares`` and ``owner``)
_ahead: tuple[str, tuple[str, Any]] | None = None


def make_scratch(scratch: str, make: dict[str, Any]) -> None:
    """An isolated attempt's scratch dir with its private ``tmp`` (1777) and the node user's (``owner``)
    ``workflow_space``, as the server's spares are: the one made ahead renamed into place, or made now."""
    global _ahead
    ahead, _ahead = _ahead, None
    if ahead is not None and ahead[1] == _made_for(make):
        try:
            os.rename(ahead[0], scratch)
            return
        except OSError:  # (the server removed its spares meanwhile)
            pass
    _make_skeleton(scratch, make["owner"])


def _made_for(make: dict[str, Any]) -> tuple[str, Any]:
    return make["spares"], make["owner"]


def _make_skeleton(path: str, owner: Sequence[int] | None) -> None:
    os.mkdir(path, 0o700)
    make_private_tmp(path, owner)


def make_private_tmp(scratch: str, owner: Sequence[int] | None) -> None:
    """``scratch/tmp`` (1777, like any /tmp) with the node user's (``owner``) empty ``workflow_space``; the
    server's spares are made by this too."""
    tmp = os.path.join(scratch, "tmp")
    os.mkdir(tmp)
    os.mkdir(os.path.join(tmp, "workflow_space"))
    os.chmod(tmp, 0o1777)
    if owner is not None:
        os.chown(os.path.join(tmp, "workflow_space"), *owner)


def make_ahead(make: dict[str, Any] | None) -> None:
    """Make the next scratch dir ahead, in ``make``'s ``spares`` dir (a sandbox with nothing else to do); an
    error only means none is ready."""
    global _ahead
    if make is None or (_ahead is not None and _ahead[1] == _made_for(make)):
        return
    drop_ahead()
    path = os.path.join(make["spares"], f"sandbox-{os.urandom(8).hex()}")
    with contextlib.suppress(OSError):
        os.makedirs(make["spares"], 0o700, exist_ok=True)
        _make_skeleton(path, make["owner"])
        _ahead = (path, _made_for(make))


def drop_ahead() -> None:
    global _ahead
    if _ahead is not None:
        shutil.rmtree(_ahead[0], ignore_errors=True)
        _ahead = None


def recorded_status(code: int) -> str:
    """The status recorded in ``exit`` for a process that ended with ``code`` (as
    :attr:`subprocess.Popen.returncode`: minus N for signal N, recorded as 128 + N, as a shell does)."""
    return str(code if code >= 0 else 128 - code)


def start_time(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return _stat_start(f.read())


def spawned(spawn: Callable[[], int | None]) -> tuple[int, int] | None:
    """The pid ``spawn()`` returns (None: nothing started), and its start time, as ``/proc/PID/stat`` says it
    (field 22: clock ticks of CLOCK_BOOTTIME at its fork), without reading it where that can be avoided: a
    read waits for the child's exec, which is most of a short node's life (round eleven,
    docs/benchmarks.md). The fork is between two readings of the clock; when both fall in the same tick, that
    tick is its start time."""
    tick = 10**9 // os.sysconf("SC_CLK_TCK")  # (nanoseconds)
    before = time.clock_gettime_ns(time.CLOCK_BOOTTIME) // tick
    pid = spawn()
    if pid is None:
        return None
    after = time.clock_gettime_ns(time.CLOCK_BOOTTIME) // tick
    return pid, before if before == after else start_time(pid)


_reports: dict[int, int] = {}  # supervisor pid -> the read end of its report pipe (non-blocking)


def launch(raw: bytes) -> list[str]:
    """Start one node (see the module docstring): the reply line, or none yet (a sandbox answers later)."""
    request = json.loads(raw)
    if request["pid_namespace"] and _warm and len(raw) <= MESSAGE_MAX:
        return _lend(request, raw)
    try:
        put_in_place(request)
        pid, report = _spawn_in_namespaces(request)
    except (OSError, SetupError) as exc:
        return [f"failed {request['id']} {' '.join(str(exc).split())}"]
    finally:
        os.chdir("/")
    _reports[pid] = report
    return [f"started {request['id']} {pid} {start_time(pid)}"]


def report_line(pid: int) -> list[str]:
    """``ended PID TIME`` when the supervisor wrote its report line; [] when it has not yet (it is kept
    watched), or never will (its pipe's end without a word: killed, or no PID namespace; ``exited`` says it)."""
    fd = _reports.get(pid)
    if fd is None:
        return []
    try:
        said = os.read(fd, 64)
    except BlockingIOError:
        return []
    del _reports[pid]
    os.close(fd)
    return [f"ended {pid} {time.time():.6f}"] if said else []


def _spawn_in_namespaces(request: dict[str, Any]) -> tuple[int, int]:
    """The supervisor in new namespaces: (pid, the read end of its report pipe)."""
    null = log = -1
    try:
        with own_namespaces(request["pid_namespace"]):
            os.chdir(request["scratch"])
            null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            log = _open_log(request["log"])
            status = bind_all(request["binds"], log)
            return _spawn_supervisor(request, null, log, status, proc=request["pid_namespace"])
    finally:
        for fd in (null, log):
            if fd >= 0:
                os.close(fd)


def _spawn_supervisor(
    request: dict[str, Any], null: int, log: int, status: str, proc: bool
) -> tuple[int, int]:
    """``sh shim.sh`` (in new namespaces, which this process must leave before it may go on, through the gate;
    ``proc``: then mount its PID namespace's /proc first)."""
    gate_r, gate_w = os.pipe()
    report_r, report_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    os.set_blocking(report_w, True)  # (the supervisor's end: a plain pipe)
    try:
        pid = os.posix_spawn(
            request["argv"][0],
            request["argv"],
            request["env"],
            file_actions=[(os.POSIX_SPAWN_DUP2, fd, to) for fd, to in ((null, 0), (log, 1), (log, 2))]
            + [(os.POSIX_SPAWN_DUP2, gate_r, GATE_FD), (os.POSIX_SPAWN_DUP2, report_w, REPORT_FD)],
            setsid=True,
            setsigdef=DEFAULT_SIGNALS,
        )
        if proc and not status:
            status = mount_proc(pid, log)
        os.write(gate_w, (status or "ok").encode(errors="replace") + b"\n")
        report_r, keep = -1, report_r
        return pid, keep
    finally:
        for fd in (gate_r, gate_w, report_r, report_w):
            if fd >= 0:
                os.close(fd)


def _spawn_node(request: dict[str, Any], null: int, log: int) -> int | None:
    """The node itself, without a supervisor (in a sandbox, which does the supervisor's work), as the node
    user; None when anything is not as usual (a stop already asked for, no such program or working directory,
    an exec that fails): the supervisor then runs it, and says why it cannot start just as it always did."""
    node = request["node"]
    argv = request["argv"][node["at"] :]
    env = node_env(request["env"])
    env.pop("OLDPWD", None)  # (as the supervisor's shell leaves them: it changed into the working directory)
    env["PWD"] = node["workdir"]
    if os.path.lexists("stop"):  # (in the scratch dir)
        return None
    try:
        os.chdir(node["workdir"])
    except OSError:
        return None
    program = find_program(argv[0], env.get("PATH", ""))
    if program is None:
        return None
    user = node["user"]
    try:
        if user is not None:  # real ids only: posix_spawn's RESETIDS makes them the child's, and exec all
            os.setresgid(user[1], -1, -1)
            os.setresuid(user[0], -1, -1)
        return os.posix_spawn(
            program,
            argv,
            env,
            file_actions=[(os.POSIX_SPAWN_DUP2, fd, to) for fd, to in ((null, 0), (log, 1), (log, 2))],
            setsid=True,
            setsigdef=DEFAULT_SIGNALS,
            resetids=user is not None,
        )
    except OSError:
        return None
    finally:
        os.setresuid(0, -1, -1)
        os.setresgid(0, -1, -1)


def node_env(env: dict[str, str]) -> dict[str, str]:
    """The node's own environment from its supervisor's (see ``Supervisors.supervisor_env``): its own LC_ALL."""
    own = {name: value for name, value in env.items() if name not in ("LC_ALL", "_aihub_lc_all")}
    if "_aihub_lc_all" in env:
        own["LC_ALL"] = env["_aihub_lc_all"]
    return own


def find_program(name: str, path: str) -> str | None:
    """``name`` as the shell's ``exec`` finds it: a path as it is, else the first executable file of that name
    in ``path`` (an empty entry: the working directory)."""
    if "/" in name:
        return name
    for directory in path.split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


# ------------------------------------------------------------------------------------ warm sandboxes

#: nodes that get a PID namespace run in warm sandboxes (``--warm-sandboxes``; else new namespaces for each)
_warm = False
#: seconds a sandbox is lent out for (then it is replaced): it sees the host's mounts as they were when it was
#: made, and a mount made on the host later reaches nodes with the next sandbox
SANDBOX_MAX_AGE = 60.0
#: the largest request a sandbox takes (one message); a larger one starts in new namespaces
MESSAGE_MAX = 1 << 17
#: bytes read from the server at a time (a request is a few KiB; below malloc's mmap threshold, so a read is
#: not an mmap and an mremap of a megabyte, as it was)
READ_SIZE = 1 << 16
#: the write end of the server's *lines pipe* (``--lines-fd``), on which sandboxes say what became of their
#: nodes; -1: none (then no sandboxes)
_lines_out = -1
#: the longest reason a sandbox gives for a start that failed (its line stays one atomic write to the pipe)
REASON_MAX = 1024
_sandboxes: dict[int, Sandbox] = {}  # the sandbox's pid (its PID 1, as this process sees it) -> sandbox
_idle: list[Sandbox] = []
_lent: list[Sandbox] = []  # a node's start handed over, its end not said yet
_cleaning: list[Sandbox] = []  # its node's end said, not back in its own mount namespace yet


class Sandbox:
    """This process's side of a sandbox: PID 1 of a PID and a mount namespace of its own, made once and lent
    to one node at a time.

    Making and taking down a PID and a mount namespace for every node, and the supervisor's three processes
    (``sh shim.sh``, its subshell, ``setpriv``), cost several times the node's own ``sh -c`` (issue 18). A
    sandbox is a fork of this process, made once, that does all of a node's start itself (see
    :func:`_run_lent`), in parallel with this process and the other sandboxes: it puts the scratch dir in
    place, makes the binds in its mount namespace, and starts the node *itself* as its child (``posix_spawn``
    as the node user; ``shim.sh`` only where something is unusual).

    This process only hands the request over. The sandbox tells the server itself, on the lines pipe
    (``--lines-fd``, which it shares with the other sandboxes: each line is one write, shorter than
    ``PIPE_BUF``, so lines never mix), what the protocol says: ``started`` (it reads its node's pid as the
    server sees it from the launcher's ``/proc``, which it keeps open), ``failed``, ``ended`` and ``exited``.
    Each time it first sends this process the same lines as a word on its channel (read only when this
    process needs to know: to lend a sandbox, or when one ended), and at last ``clean`` (its mounts undone: it
    may be lent again). So what the server has heard is
    never more than this process knows, and a sandbox that dies between its word and its line has its lines
    said again here, with the node's end (the server takes a line it already had as said twice: it ignores
    it). Before it was told that way, this process woke up four times a node to pass the words on (round
    eleven, docs/benchmarks.md): now once, for the request.

    Its ``/proc`` is its PID namespace's, mounted by itself. The node's pid and start time and the sandbox's
    are in ``supervisor`` in its scratch dir (written before the server hears ``started``), for a server that
    did not start it. When this process ends (the server stopped or restarted), a sandbox waits for its node
    (its own child: its status is never lost), records it, and exits (the kernel kills what is left in its
    namespace): a running node keeps running, as it did in namespaces of its own, and the next server finds
    it. (docs/benchmarks.md, round seven: the engine takes a sixth to a quarter less time with sandboxes than
    with new namespaces for each node.)"""

    def __init__(self) -> None:
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with own_namespaces(True):
                self.pid = os.fork()
                if self.pid == 0:
                    self.channel.close()
                    _sandbox_main(theirs)
        except BaseException:
            self.channel.close()
            raise
        finally:
            theirs.close()
        _sandboxes[self.pid] = self
        self.made = time.monotonic()
        self.asked: tuple[dict[str, Any], bytes, int] | None = None  # a start not answered yet, and its tries
        # what it started and has not said the end of: (its pid here, its scratch dir)
        self.node: tuple[int, str] | None = None
        self.told: list[str] = []  # the lines it told the server (or was about to) since it was last clean
        if self.receive(CLEAN_TIMEOUT + 5) != b"ready":  # (its /proc mounted, its own mount namespace kept)
            self.retire()
            raise SetupError("the sandbox for the node's namespaces could not be made")

    def lend(self, request: dict[str, Any], raw: bytes, tries: int) -> bool:
        """Hand a start over (False: the sandbox is gone)."""
        try:
            self.channel.send(raw)
        except OSError:
            self.retire()
            return False
        self.asked = (request, raw, tries)
        _lent.append(self)
        return True

    def receive(self, wait: float) -> bytes:
        """The sandbox's next word, waited for up to ``wait`` seconds (b"" when it is gone, or still silent)."""
        try:
            if wait <= 0:
                return self.channel.recv(REASON_MAX + 64, socket.MSG_DONTWAIT)
            if select.select([self.channel], [], [], wait)[0]:
                return self.channel.recv(REASON_MAX + 64)
        except OSError:  # (BlockingIOError: nothing said)
            pass
        return b""

    def catch_up(self, until_clean: bool = False) -> None:
        """Take in the words the sandbox said meanwhile (``until_clean``: and wait for ``clean`` while it is
        cleaning, up to CLEAN_TIMEOUT + 5 s); one that ended is left to its reaping."""
        deadline = time.monotonic() + CLEAN_TIMEOUT + 5
        while self.channel.fileno() >= 0:
            wait = max(0.0, deadline - time.monotonic()) if until_clean and self in _cleaning else 0.0
            said = self.receive(wait)
            if not said:
                return
            self.heard(said)

    def heard(self, said: bytes) -> None:
        """One word of the sandbox's: the very lines it is about to tell the server, or that it is clean."""
        word = said.partition(b" ")[0]
        lines = said.decode(errors="replace").splitlines()
        if word == b"started" and self.asked is not None:  # started ID PID START
            request, self.asked = self.asked[0], None
            self.node = (int(lines[0].split()[2]), request["scratch"])
            self.told = lines
        elif word == b"failed" and self.asked is not None:
            self.asked, self.told = None, lines
            self._move(_lent, _cleaning)
        elif word == b"ended" and self.node is not None:  # ended PID TIME, exited PID CODE [node]
            self.node = None
            self.told += lines
            self._move(_lent, _cleaning)
        elif word == b"clean":
            self.told = []
            self._move(_cleaning, _idle)
        else:
            self.retire()  # (said what it should not: its end, reaped later, says the rest)

    def _move(self, source: list[Sandbox], target: list[Sandbox]) -> None:
        with contextlib.suppress(ValueError):
            source.remove(self)
        target.append(self)

    def gone(self) -> list[str]:
        """The sandbox ended (killed, or once retired): the lines it told the server, or was about to, once
        more (the server ignores a line it had); a node it ran ended with it (the kernel killed what was in its
        namespace); a start it had not answered goes to another sandbox (once)."""
        self.catch_up()
        lines, asked, node = self.told, self.asked, self.node
        self.told, self.asked, self.node = [], None, None
        self.retire()
        if node is not None:
            pid, scratch = node
            with contextlib.suppress(OSError):  # (unless it recorded the node's own end first)
                fd = os.open(os.path.join(scratch, "exit"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, f"{128 + signal.SIGKILL}\n".encode())
                os.close(fd)
            lines += [f"ended {pid} {time.time():.6f}", f"exited {pid} {-signal.SIGKILL}"]
        if asked is not None:
            lines += _lend(*asked)
        return lines

    def retire(self) -> None:
        """No more lending: the sandbox exits once what runs in it has ended (it is reaped here)."""
        if self.channel.fileno() < 0:
            return
        self.channel.close()
        for pool in (_idle, _lent, _cleaning):
            with contextlib.suppress(ValueError):
                pool.remove(self)


def _lend(request: dict[str, Any], raw: bytes, tries: int = 2) -> list[str]:
    """Hand a start to a sandbox (its answer comes later), or say it failed: two sandboxes ended under it."""
    if (
        tries < 2 and "meta" in request and os.path.lexists(request["scratch"])
    ):  # (put in place by one that ended)
        request = {name: value for name, value in request.items() if name not in ("spare", "make")}
        raw = json.dumps(request).encode()
    try:
        while tries > 0:
            tries -= 1
            if take_sandbox().lend(request, raw, tries):
                return []
    except (OSError, SetupError) as exc:
        return [f"failed {request['id']} {' '.join(str(exc).split())}"]
    return [f"failed {request['id']} the sandbox for the node's namespaces ended"]


def _write_at(directory: int | str, name: str, text: str) -> None:
    """``text`` as the file ``name`` in ``directory`` (an fd, or a path), in one write (readers take an empty
    file for one not written yet)."""
    if isinstance(directory, str):
        name, directory = os.path.join(directory, name), -1
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    fd = os.open(name, flags, 0o644, dir_fd=directory if directory >= 0 else None)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def take_sandbox() -> Sandbox:
    """An idle sandbox young enough (one still undoing its last node's mounts is waited for: that is quicker
    than a new one), or a new one. What the lent ones said is read only when none is known to be idle."""
    for sandbox in [] if _idle else [*_lent, *_cleaning]:
        sandbox.catch_up()
    while _cleaning and not _idle:
        sandbox = _cleaning[-1]
        sandbox.catch_up(until_clean=True)
        if sandbox in _cleaning:
            sandbox.retire()  # (its end, reaped later, says the rest)
    while _idle:
        sandbox = _idle.pop()
        if time.monotonic() - sandbox.made < SANDBOX_MAX_AGE:
            return sandbox
        sandbox.retire()
    return Sandbox()


def _let_idle_sandboxes_go() -> None:
    """The server is done with this process: the idle sandboxes exit and are reaped here (their CPU counted
    with this process's); the ones lent keep what runs in them (see :class:`Sandbox`)."""
    for sandbox in [*_lent, *_cleaning]:
        sandbox.catch_up()
    idle = [*_idle, *_cleaning]
    for sandbox in idle:
        sandbox.retire()
    for sandbox in idle:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(sandbox.pid, 0)


# ------------------------------------------------------------------------------------ in the sandbox


class Outside:
    """What a sandbox knows of the launcher's PID namespace: the launcher's ``/proc`` (opened before its own
    hides it), and its own pid and start time there."""

    def __init__(self) -> None:
        self.proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.pid = int(os.readlink("self", dir_fd=self.proc))
        self.start = _stat_start(self._read(f"{self.pid}/stat"))

    def pid_of(self, pidfd: int) -> int:
        """The pid, as the launcher and the server see it, of the process a pidfd refers to."""
        info = self._read(f"{self.pid}/fdinfo/{pidfd}")
        return int(next(line for line in info.splitlines() if line.startswith(b"Pid:")).split()[1])

    def _read(self, path: str) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.proc)
        try:
            return os.read(fd, 4096)
        finally:
            os.close(fd)


def _stat_start(stat: bytes) -> int:
    """The start time (field 22) of a ``/proc/PID/stat``."""
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


def failure_reason(exc: Exception) -> bytes:
    """Why a start failed, on one line, in UTF-8, cut to REASON_MAX bytes (not inside a character)."""
    reason = " ".join(str(exc).split()).encode(errors="replace")[:REASON_MAX]
    return reason.decode(errors="ignore").encode()


def _tell(channel: socket.socket, lines: bytes) -> None:
    """Lines for the server: first to the launcher, as a word on ``channel`` (see :class:`Sandbox`), then on the
    lines pipe, in one write (nothing there when the server no longer reads it)."""
    channel.send(lines)
    with contextlib.suppress(OSError):
        os.write(_lines_out, lines)


def _sandbox_main(channel: socket.socket) -> NoReturn:
    """The sandbox (this process's fork, PID 1 of the new namespaces): never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # (not the server's pipes: their ends must go with this process)
            os.dup2(null, fd)
        for name in os.listdir("/proc/self/fd"):
            if int(name) not in (0, 1, 2, channel.fileno(), _lines_out):
                with contextlib.suppress(OSError):
                    os.close(int(name))
        outside = Outside()
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV)
        home = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)  # (each node gets a copy of it)
        _copy_home()
        channel.send(b"ready")
        buffer = bytearray(MESSAGE_MAX)  # (one buffer: a fresh 128 KiB each time is an mmap and an mremap)
        while size := channel.recv_into(buffer):  # (its end: the launcher is gone, or retired it)
            request = json.loads(buffer[:size])
            if not _run_lent(channel, request, home, outside):
                break
            _copy_home()
            if not select.select([channel], [], [], 0)[0]:  # (nothing asked meanwhile)
                make_ahead(request.get("make"))
        code = 0
    finally:
        drop_ahead()
        os._exit(code)


def _copy_home() -> None:
    """Go into a copy of the sandbox's own mount namespace, for the next node's mounts: they go with it when
    the sandbox goes back to its own (``_clean``), no mount table to read, no path to unmount by. Made ahead,
    between two nodes (the copy is most of the namespace work: not on the next node's way any more)."""
    _check(_libc().unshare(CLONE_NEWNS), "unshare")


def _run_lent(channel: socket.socket, request: dict[str, Any], home: int, outside: Outside) -> bool:
    """One node, from its start to the sandbox cleaned after it; False when the sandbox is to end (the launcher
    is gone: the node ran to its end and its status is recorded; or the sandbox could not be cleaned). Each
    line for the server comes after the word that tells the launcher (see :class:`Sandbox`)."""
    try:
        pid, start, scratch, own = _start_lent(request)
    except (OSError, SetupError) as exc:
        _tell(channel, b"failed %d %s\n" % (request["id"], failure_reason(exc)))
        return _clean(channel, home, None)
    finally:
        os.chdir("/")
    pidfd = os.pidfd_open(pid)
    try:
        outer = outside.pid_of(pidfd)
        if own:  # (a supervisor is found by its command line; a node by this file, once the server is back)
            with contextlib.suppress(OSError):
                _write_at(scratch, "supervisor", f"{outer} {start} {outside.pid} {outside.start}\n")
        _tell(channel, b"started %d %d %d\n" % (request["id"], outer, start))
        # (a lent sandbox's channel has nothing more to say but its end: the launcher is gone, the node goes on)
        go_on = pidfd in select.select([channel, pidfd], [], [])[0]
        code, when = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), time.time()
        if own:  # (the supervisor records its own)
            with contextlib.suppress(OSError):  # (nothing recorded: the executor says the node vanished)
                _write_at(scratch, "exit", f"{recorded_status(code)}\n")
    finally:
        os.close(pidfd)
        os.close(scratch)
    ended = b"ended %d %.6f\nexited %d %d%s\n" % (outer, when, outer, code, b" node" if own else b"")
    return go_on and _clean(channel, home, ended)


def _start_lent(request: dict[str, Any]) -> tuple[int, int, int, bool]:
    """Start the node here (or its supervisor, when anything is unusual): (its pid, its start time, an fd of
    its scratch dir, whether it is the node itself)."""
    put_in_place(request)
    os.chdir(request["scratch"])
    scratch = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)  # (the binds may hide the data dir)
    log = -1
    try:
        log = _open_log(request["log"])
        status = bind_all(request["binds"], log)
        null = 0  # (the sandbox's stdin is /dev/null)
        node = not status and "node" in request
        started = spawned(lambda: _spawn_node(request, null, log)) if node else None
        own = started is not None
        if started is None:
            os.fchdir(scratch)
            started = spawned(lambda: _spawn_quiet_supervisor(request, null, log, status))
        assert started is not None
        scratch, kept = -1, scratch
        return *started, kept, own
    finally:
        for fd in (log, scratch):
            if fd >= 0:
                os.close(fd)


def _spawn_quiet_supervisor(request: dict[str, Any], null: int, log: int, status: str) -> int:
    pid, report = _spawn_supervisor(request, null, log, status, proc=False)
    os.close(report)  # (a supervisor that is not PID 1 says nothing on it)
    return pid


def _clean(channel: socket.socket, home: int, ended: bytes | None) -> bool:
    """Kill and reap what is left, tell the node's end (``ended``, when one was started), go back to the
    sandbox's own mount namespace ``home`` (the node's copy, with every mount made in it, is dropped by the
    kernel: nothing uses it any more), say ``clean``; False when that could not be done (the sandbox ends
    instead)."""
    if not _kill_all():
        return False  # (exiting takes everything in the namespace along)
    if ended is not None:  # (the node's end may be reported: nothing of it runs any more)
        _tell(channel, ended)
    if _libc().setns(home, CLONE_NEWNS) != 0:
        return False
    channel.send(b"clean")  # (and the sandbox may be lent again)
    return True


#: seconds a sandbox may take to reap what it killed (one stuck in the kernel, say on a dead NFS server): then
#: it exits instead (the kernel takes its namespace down), and the node's end is reported all the same
CLEAN_TIMEOUT = 10


def _kill_all() -> bool:
    """Kill and reap every process of the namespace but this one; False when some would not go. (SIGALRM is
    handled only meanwhile: PID 1 of a namespace gets no signal from it that it does not handle.)"""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        return True  # (nothing else here, not even a zombie: a node that left nothing, the usual case)
    signal.signal(signal.SIGALRM, _time_out)
    signal.alarm(CLEAN_TIMEOUT)
    try:
        for _ in range(10):
            with contextlib.suppress(ProcessLookupError):  # (none left)
                os.kill(-1, signal.SIGKILL)
            while True:
                try:
                    os.waitpid(-1, 0)
                except ChildProcessError:
                    break
            if not _running_here():
                return True
        return False
    except TimeoutError:
        return False
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


def _time_out(signum: int, frame: object) -> None:
    raise TimeoutError


def _running_here() -> list[int]:
    """The namespace's processes but PID 1, zombies left out (one whose parent is outside, as ``nsenter``,
    stays one until that parent reaps it)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and name != "1":
            with contextlib.suppress(OSError):
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
                if stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z":
                    found.append(int(name))
    return found


# ------------------------------------------------------------------------------------ the main loop


def reap() -> list[str]:
    lines = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return lines
        if pid == 0:
            return lines
        if pid in _sandboxes:
            lines += _sandboxes.pop(pid).gone()
            continue
        lines += report_line(pid)  # (its line, if it wrote one, is there: it came before its exit)
        fd = _reports.pop(pid, None)
        if fd is not None:
            os.close(fd)
        lines.append(f"exited {pid} {os.waitstatus_to_exitcode(status)}")


def close_inherited() -> None:
    """Close every descriptor but the standard three and the lines pipe (kept from supervisors and nodes:
    close-on-exec; the sandboxes, forks, keep it). The server's event loop may not have (uvloop's spawn,
    libuv's, closes none): its inheritable descriptors and the other ends of this process's pipes would reach
    every supervisor and node, which posix_spawn starts with all that is not close-on-exec — a node left running
    would hold the server's stdout, or a pipe the server's parent waits on."""
    for name in os.listdir("/proc/self/fd"):
        if int(name) > 2 and int(name) != _lines_out:
            with contextlib.suppress(OSError):  # (the listing's own descriptor, closed already)
                os.close(int(name))
    if _lines_out >= 0:
        os.set_inheritable(_lines_out, False)


def _configure(args: list[str]) -> None:
    global _proc_by_supervisor, _warm, _lines_out, SANDBOX_MAX_AGE
    _proc_by_supervisor = "--proc-by-supervisor" in args
    for arg in args:
        if arg.startswith("--sandbox-max-age="):
            SANDBOX_MAX_AGE = float(arg.partition("=")[2])
        elif arg.startswith("--lines-fd="):
            _lines_out = int(arg.partition("=")[2])
    _warm = "--warm-sandboxes" in args and _lines_out >= 0 and _pidfds()


def _pidfds() -> bool:
    """Whether this kernel has pidfds (Linux 5.3 and later), through which a sandbox hands its node over: on
    an older one nodes start in new namespaces each, as without ``--warm-sandboxes``."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


def _no_way_up() -> None:
    """What setpriv gives a node run through the supervisor, for a node started here to inherit: no
    supplementary groups, no way to gain privileges (setuid files, file capabilities) by exec."""
    if os.geteuid() == 0:
        os.setgroups([])
        _check(_libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl")


def _watch_reports(selector: selectors.BaseSelector, watched: dict[int, int]) -> None:
    """Watch the report pipes of the supervisors running, and no other."""
    for fd in [fd for fd, pid in watched.items() if _reports.get(pid) != fd]:  # read, or reaped
        selector.unregister(fd)
        del watched[fd]
    for pid, fd in _reports.items():
        if fd not in watched:
            selector.register(fd, selectors.EVENT_READ)
            watched[fd] = pid


def _wake_on_sigchld() -> int:
    """The read end of a pipe that a SIGCHLD writes to (a child ended: something to reap)."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # (a handler, so that the wake-up fd is written)
    return wake_r


def main() -> None:
    _configure(sys.argv[1:])
    close_inherited()
    _no_way_up()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when this ends (stdin's end)
    os.chdir("/")  # (so that no directory of the server's stays in use)
    wake_r = _wake_on_sigchld()
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    watched: dict[int, int] = {}  # report pipe -> supervisor pid, as registered with the selector
    pending = b""
    out = sys.stdout
    while True:
        replies: list[str] = []
        child_ended = False  # (a SIGCHLD, seen on the wake-up pipe: only then is there anything to reap)
        for key, _ in selector.select():
            if key.fd == wake_r:
                child_ended = True
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
            elif key.fd in watched:
                replies += report_line(watched[key.fd])
            else:
                chunk = os.read(key.fd, READ_SIZE)
                if not chunk:
                    _let_idle_sandboxes_go()
                    return
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    replies += launch(line) if line else []
        if child_ended:
            replies += reap()
        _watch_reports(selector, watched)
        if replies:
            out.write("".join(line + "\n" for line in replies))
            out.flush()


# ------------------------------------------------------------------------------------ the server's side


class Launched:
    """A supervisor the launcher started: its pid, and how it ended once the launcher reaped it."""

    def __init__(self, pid: int, start_time: int) -> None:
        self.pid = pid
        self.start_time = start_time
        self.returncode: int | None = None  # as Popen's: the exit status, or minus the killing signal
        self.ended = asyncio.Event()  # set once reaped, or once the launcher is gone (returncode stays None)
        # set once it said it recorded the node's status (``ended``; its namespaces may still be going away),
        # and in any case together with ``ended``
        self.recorded = asyncio.Event()
        self.reported = False  # it said so itself (True), or recorded was set by its end or the launcher's
        self.recorded_at: float | None = None  # when the launcher read its word (see ``ended``)
        # it was the node itself, which its sandbox reaped and recorded (``exited PID CODE node``): then
        # ``returncode`` is what ``exit`` says, and ``recorded_at`` when the node was reaped
        self.node_recorded = False

    def _end(self, returncode: int | None) -> None:
        self.returncode = returncode
        self.ended.set()
        self.recorded.set()

    def poll(self) -> int | None:
        return self.returncode


class LauncherClient:
    """The server's end of one launcher process (started on first use, again if it ended)."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lines: asyncio.Task[None] | None = None  # reads the sandboxes' lines pipe
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Launched]] = {}
        self._launched: dict[int, Launched] = {}
        self._starting = asyncio.Lock()  # (two launches that find it gone start one new launcher)

    @property
    def pid(self) -> int | None:
        """The launcher's process id while it runs (or has not been waited for)."""
        return self._proc.pid if self._proc is not None else None

    async def launch(self, request: dict[str, Any]) -> Launched:
        """Start a supervisor (see the module docstring for ``request``); OSError when it could not be."""
        async with self._starting:
            if not self._running():
                await self._start()
        assert self._proc is not None and self._proc.stdin is not None
        ident = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        self._proc.stdin.write(json.dumps({**request, "id": ident}).encode() + b"\n")
        try:
            await self._proc.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            self._pending.pop(ident, None)
            raise OSError(f"the launcher ended: {exc}") from None
        return await future

    def _running(self) -> bool:
        proc, reader = self._proc, self._reader
        return proc is not None and proc.returncode is None and reader is not None and not reader.done()

    async def _start(self) -> None:
        await self.close()
        lines_r, lines_w = os.pipe()  # (the sandboxes' lines: see Sandbox)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                str(Path(__file__)),
                *(["--proc-by-supervisor"] if PROC_BY_SUPERVISOR else []),
                *(["--warm-sandboxes"] if WARM_SANDBOXES else []),
                f"--sandbox-max-age={SANDBOX_MAX_AGE:g}",
                f"--lines-fd={lines_w}",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                pass_fds=(lines_w,),
                start_new_session=True,  # (a Ctrl-C meant for the server's terminal is not for it)
                env={"LC_ALL": "C"},  # nothing of the server's environment (its secrets) in one more process
            )
        except BaseException:
            os.close(lines_r)
            raise
        finally:
            os.close(lines_w)
        self._lines = asyncio.create_task(self._read_lines(lines_r), name="local executor sandboxes")
        self._reader = asyncio.create_task(self._read(self._proc), name="local executor launcher")

    async def _read_lines(self, fd: int) -> None:
        """The sandboxes' lines, until the launcher is gone (sandboxes still running may outlive it, holding
        the pipe: the launcher's own stdout says when it ended)."""
        reader = asyncio.StreamReader()
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        try:
            while line := await reader.readline():
                self._handle(line.decode(errors="replace"))
        finally:
            transport.close()

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            while line := await proc.stdout.readline():
                self._handle(line.decode())
        finally:  # the launcher is gone: nothing pending will be answered, no exit reported
            if self._lines is not None:
                self._lines.cancel()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(OSError("the launcher ended"))
            self._pending.clear()
            for launched in self._launched.values():
                launched._end(None)
            self._launched.clear()

    def _handle(self, line: str) -> None:
        kind, _, tail = line.strip().partition(" ")
        if kind == "ended":
            pid, when = tail.split()
            launched = self._launched.get(int(pid))
            if launched is not None:
                launched.reported = True
                launched.recorded_at = float(when)
                launched.recorded.set()
            return
        if kind == "exited":
            pid, code, *what = tail.split()
            launched = self._launched.pop(int(pid), None)
            if launched is not None:
                launched.node_recorded = what == ["node"]
                launched._end(int(code))
            return
        ident, _, rest = tail.partition(" ")
        future = self._pending.pop(int(ident), None)
        if future is None:  # (said twice: by a sandbox, and again by the launcher once it ended; see Sandbox)
            return
        if kind == "started":
            pid, start_time = rest.split()
            launched = Launched(int(pid), int(start_time))
            self._launched[launched.pid] = launched
            future.set_result(launched)
        else:
            future.set_exception(OSError(rest or "the launcher failed"))

    async def close(self) -> None:
        """End the launcher (supervisors it started keep running); wait for it and its reader."""
        proc, reader, lines = self._proc, self._reader, self._lines
        self._proc = self._reader = self._lines = None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            async with asyncio.timeout(5):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if reader is not None:
            await reader
        if lines is not None:
            lines.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lines


if __name__ == "__main__":
    main()
