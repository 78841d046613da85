"""A design not in the product, measured (issue 18, target 1): nodes launched in a *warm* sandbox.

Run from the repository root as root: ``.venv/bin/python bench/warm_sandbox.py [--launches N] [--rounds R]``;
``--check`` runs two nodes and shows what they see instead. Not part of ``make test``; docs/benchmarks.md holds
the figures.

Today every node gets new PID and mount namespaces, and round three measured that their set-up and teardown
keep any supervisor at 2-3x a bare spawn. Here one long-lived process is PID 1 of its own PID and mount
namespaces (with their own ``/proc``, and the data dir hidden, made once) and runs nodes *one after another*,
as a slot would. Per node it binds a fresh private ``/tmp``, spawns the node as ``nobody`` (``posix_spawn``
with ``RESETIDS`` while its own real ids are ``nobody``'s: no ``setpriv``, no shell supervisor), waits for it,
records its status in ``exit``, kills everything else in the namespace (``kill(-1)``), reaps it all and
undoes the bind. The namespaces are reused, never shared: one node at a time, nothing of the last one left.

Compared, each running ``sh -c true`` for ``--launches`` launches in turn, the ways alternating per round:

- **bare**: ``posix_spawn`` of ``sh -c true``, no isolation (the floor);
- **warm**: the sandbox above;
- **launcher**: the shipped way of a root server (``aihub/engine/executors/launcher.py`` driven through its
  protocol: namespaces made per node, ``sh shim.sh`` as PID 1, ``setpriv`` in front of the node).

CPU is of the whole tree per launch: this process, its reaped children, the sandbox's PID 1 and the launcher
with what they reaped.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aihub.engine.executors import launcher  # noqa: E402

SH = shutil.which("sh") or "/bin/sh"
NOBODY = 65534
ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
MNT_DETACH = 2
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
SHIM = ROOT / "aihub" / "engine" / "executors" / "shim.sh"
SETPRIV = ["/usr/bin/setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--no-new-privs", "--"]

libc = ctypes.CDLL(None, use_errno=True)
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds of this process, its reaped children, and ``pids`` with what they reaped."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        total += sum(int(f) for f in stat[stat.rindex(b")") + 2 :].split()[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


# ------------------------------------------------------------------------------------------ the sandbox


def _sandbox(requests: int, replies: int, data_dir: str, empty: str) -> None:
    """PID 1 of its namespaces: one node per request line (``SCRATCH-NAME<TAB>COMMAND``), one reply line
    (``ended CODE``) each."""
    scratch_root = os.open(f"{data_dir}/scratch", os.O_PATH | os.O_DIRECTORY)  # before the data dir is hidden
    launcher.mount("none", "/", None, launcher.MS_REC | launcher.MS_PRIVATE)
    launcher.mount("proc", "/proc", "proc", launcher.MS_NOSUID | launcher.MS_NOEXEC | launcher.MS_NODEV)
    launcher.bind(empty, data_dir, "ro")
    os.setgroups([])
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    with os.fdopen(requests, "rb") as lines:
        for line in lines:
            name, _, command = line.decode().rstrip("\n").partition("\t")
            code = _one_node(scratch_root, name, command or "true", null)
            os.write(replies, f"ended {code}\n".encode())


def _one_node(scratch_root: int, name: str, command: str, null: int) -> int:
    scratch = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=scratch_root)
    os.fchdir(scratch)  # (in the hidden data dir: reached through the descriptor)
    log = os.open("log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    tmp = os.open("tmp", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=scratch)
    launcher.bind(f"/proc/self/fd/{tmp}", "/tmp", "tree")
    os.setresgid(NOBODY, -1, -1)  # real ids only: RESETIDS gives them to the child, and exec makes them all
    os.setresuid(NOBODY, -1, -1)
    try:
        pid = os.posix_spawn(
            SH,
            [SH, "-c", command],
            ENV,
            file_actions=[(os.POSIX_SPAWN_DUP2, fd, to) for fd, to in ((null, 0), (log, 1), (log, 2))],
            setsid=True,
            resetids=True,
        )
    finally:
        os.setresuid(0, -1, -1)
        os.setresgid(0, -1, -1)
    for fd in (log, tmp, scratch):
        os.close(fd)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    exit_file = os.open("exit", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(exit_file, f"{code}\n".encode())
    os.close(exit_file)
    with contextlib.suppress(ProcessLookupError):  # (none left)
        os.kill(-1, signal.SIGKILL)  # everything else in the namespace
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    if libc.umount2(b"/tmp", MNT_DETACH) != 0:
        raise OSError(ctypes.get_errno(), "umount /tmp")
    os.chdir("/")
    return code


class Sandbox:
    """The sandbox's PID 1, started in new namespaces (this process is its subreaper)."""

    def __init__(self, data_dir: Path, empty: Path) -> None:
        requests, self._requests = os.pipe()
        self._replies, replies = os.pipe()
        middle = os.fork()
        if middle == 0:
            try:
                os.close(self._requests)
                os.close(self._replies)
                if launcher._libc().unshare(launcher.CLONE_NEWNS | launcher.CLONE_NEWPID) != 0:
                    raise OSError(ctypes.get_errno(), "unshare")
                if os.fork() == 0:  # PID 1 of the new PID namespace
                    _sandbox(requests, replies, str(data_dir), str(empty))
                os._exit(0)
            except BaseException as exc:
                print(f"sandbox: {exc}", file=sys.stderr)
                os._exit(1)
        os.close(requests)
        os.close(replies)
        os.waitpid(middle, 0)
        self.pid = next(pid for pid in _children() if pid != middle)

    def run(self, scratch: Path, command: str = "", timeout: float = 30) -> str:
        os.write(self._requests, f"{scratch.name}\t{command}\n".encode())
        if not select.select([self._replies], [], [], timeout)[0]:
            raise TimeoutError(f"the sandbox did not answer within {timeout} s")
        return os.read(self._replies, 64).decode().strip()


def _children() -> list[int]:
    mine = str(os.getpid()).encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            if stat[stat.rindex(b")") + 2 :].split()[1] == mine:
                found.append(int(entry))
    return found


# ------------------------------------------------------------------------------------------- the ways


def new_scratch(root: Path) -> Path:
    scratch = Path(tempfile.mkdtemp(dir=root))
    (scratch / "tmp" / "workflow_space").mkdir(parents=True)
    os.chmod(scratch / "tmp", 0o1777)
    os.chown(scratch / "tmp" / "workflow_space", NOBODY, NOBODY)
    return scratch


def bare(root: Path) -> None:
    new_scratch(root)
    os.waitpid(os.posix_spawn(SH, [SH, "-c", "true"], ENV), 0)


def shipped(proc: subprocess.Popen[bytes], root: Path, data_dir: Path, empty: Path, ident: int) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    scratch = new_scratch(root)
    shim = [SH, str(SHIM), str(scratch), "-", "/tmp/workflow_space", "/usr/bin/mount", "0", "--"]
    request = {
        "id": ident,
        "argv": [*shim, *SETPRIV, SH, "-c", "true"],
        "env": {**ENV, "LC_ALL": "C"},
        "scratch": str(scratch),
        "log": str(scratch / "log"),
        "binds": [[str(scratch / "tmp"), "/tmp", "tree"], [str(empty), str(data_dir), "ro"]],
        "pid_namespace": True,
    }
    proc.stdin.write(json.dumps(request).encode() + b"\n")
    proc.stdin.flush()
    line = _reply(proc.stdout)
    if not line.startswith("ended") or (scratch / "exit").read_text().strip() != "0":
        raise RuntimeError(f"the launcher's node failed: {line}")


def _reply(out: IO[bytes]) -> str:
    while True:
        line = out.readline().decode()
        if not line or line.startswith(("ended", "failed")):
            return line


def check(sandbox: Sandbox, root: Path, data_dir: Path) -> list[str]:
    """Two nodes: the first leaves a file in /tmp and two processes behind; the second must see neither. Shows
    what they printed; returns what is not as a node gets it today (empty: all of it is)."""
    first = (
        "echo uid $(id -u) gid $(id -g) groups $(id -G); echo left > /tmp/mark; (sleep 600 & sleep 601 &); "
        f"echo data dir: $(ls -A {data_dir} 2>&1); grep -E 'NoNewPrivs|CapEff' /proc/self/status"
    )
    second = "echo tmp: $(ls -A /tmp); echo processes: $(ls /proc | grep -c '^[0-9]'); ps -eo pid,user,args"
    logs = []
    for command in (first, second):
        scratch = new_scratch(root)
        reply = sandbox.run(scratch, command)
        logs.append((scratch / "log").read_text())
        print(f"$ {command}\n-> {reply}\n{logs[-1]}")
    left = subprocess.run(["pgrep", "-f", "sleep 60[01]"], capture_output=True, text=True).stdout.split()
    print(f"processes the first node left, still on this host: {left or 'none'}")
    wanted = {
        "runs as nobody, no supplementary group": f"uid {NOBODY} gid {NOBODY} groups {NOBODY}\n" in logs[0],
        "the data dir hidden (empty)": "data dir:\n" in logs[0],
        "no capabilities": "CapEff:\t0000000000000000" in logs[0],
        "no new privileges": "NoNewPrivs:\t1" in logs[0],
        "the last node's /tmp gone": "tmp: workflow_space\n" in logs[1],
        "the last node's processes killed": not left,
        # in ps: PID 1 (this program) and the node's own processes, nothing of the host or of the last node
        "its own PID namespace": _ps_only_self(logs[1]),
    }
    return [what for what, ok in wanted.items() if not ok]


def _ps_only_self(log: str) -> bool:
    rows = [line.split(None, 2) for line in log.split("PID USER", 1)[1].splitlines()[1:] if line.strip()]
    return rows[0][:2] == ["1", "root"] and all(r[1] == "nobody" and "sleep" not in r[2] for r in rows[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--launches", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--check", action="store_true", help="run two nodes and show what they see")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the sandbox and the launcher make namespaces")
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # the sandbox's PID 1 is this process's child
    base = Path(tempfile.mkdtemp(prefix="aihub-warm-", dir="/var/tmp"))
    base.chmod(0o755)  # (so that only the sandbox's hiding keeps the data dir from the node)
    data_dir, empty = base / "data", base / "empty"
    root = data_dir / "scratch"
    root.mkdir(parents=True)
    empty.mkdir(mode=0o555)
    sandbox = Sandbox(data_dir, empty)
    try:
        if args.check:
            missing = check(sandbox, root, data_dir)
            if missing:
                sys.exit("NOT as today: " + "; ".join(missing))
            print("isolation as a node gets it today: all checks passed")
            return
        proc = subprocess.Popen(
            [sys.executable, "-I", launcher.__file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={"LC_ALL": "C"},
        )
        print(
            f"{args.launches} launches per way and round, one at a time; CPU of the whole tree, ms per launch"
        )
        for number in range(1, args.rounds + 1):
            figures = []
            for way in ("bare", "warm", "launcher"):
                cpu, wall = tree_cpu([sandbox.pid, proc.pid]), time.perf_counter()
                for ident in range(args.launches):
                    if way == "bare":
                        bare(root)
                    elif way == "warm":
                        reply = sandbox.run(new_scratch(root))
                        if reply != "ended 0":
                            raise RuntimeError(f"the sandbox's node failed: {reply}")
                    else:
                        shipped(proc, root, data_dir, empty, ident)
                cpu = tree_cpu([sandbox.pid, proc.pid]) - cpu
                wall = time.perf_counter() - wall
                figures.append(
                    f"{way} {1000 * cpu / args.launches:.2f} CPU / {1000 * wall / args.launches:.2f} wall"
                )
            print(f"round {number} (load {os.getloadavg()[0]:.1f}): " + "; ".join(figures), flush=True)
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    finally:
        os.kill(sandbox.pid, signal.SIGKILL)
        os.waitpid(sandbox.pid, 0)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
