"""Launch benchmark (issue 18, target 1): what one node's isolated process chain costs, each way it can start.

Run from the repository root as root: ``.venv/bin/python bench/launch.py [--launches N] [--rounds R]``.
docs/benchmarks.md holds the figures.

Per launch, one after the other (no parallelism, so wall time is latency): a supervisor that runs ``sh -c true``
as the node user, in what a real node gets — PID and mount namespaces, its own /proc, a private /tmp, the data
dir hidden read-only — started

- **launcher**: the way a root server starts it (``launcher.py``: namespaces and binds by system calls, then
  ``posix_spawn`` of ``sh shim.sh``);
- **unshare chain**: the way it started before, and still does for a server that is not root (``unshare`` +
  ``sh shim.sh`` + one ``mount(8)`` per bind + ``setpriv`` + ``sh -c``);
- **bare**: ``true`` from ``asyncio.create_subprocess_exec``, no isolation at all: the floor.

CPU is of everything involved: this process, its reaped children, and the launcher with the supervisors it
reaped (``/proc/<launcher>/stat``). The ways alternate in each round, so they share the machine's load. A
launch ends once the executor would see its end (the supervisor's word through the launcher, before its
namespaces are gone; the process's end for the others); the round's CPU is read once every supervisor of it
was reaped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aihub.engine.executors import launcher as launcher_module  # noqa: E402
from aihub.engine.executors.local_supervisors import (  # noqa: E402
    Bind,
    Supervisors,
    _base_env,
    _ended,
    _recorded,
    _Tools,
)

Launch = Callable[[Path], Awaitable[None]]
Settle = Callable[[], Awaitable[None]]


def _tree_cpu(sup: Supervisors | None) -> float:
    """CPU seconds of this process, its reaped children and the launcher's tree."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    pid = sup.launcher.pid if sup is not None and sup.launcher is not None else None
    if pid is not None:  # the launcher with what it reaped, and its warm sandboxes (its live children)
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for one in [pid, *map(int, children)]:
            stat = Path(f"/proc/{one}/stat").read_bytes()
            fields = stat[stat.rindex(b")") + 2 :].split()
            total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


async def probed(data_dir: Path, launcher: bool, warm: bool = False) -> Supervisors:
    real_find = _Tools.find
    sup = Supervisors(data_dir / "runs", isolation="auto", run_as="auto", private_paths=[data_dir])
    try:
        if not launcher:
            _Tools.find = staticmethod(lambda: _replace_launcher(real_find()))  # type: ignore[method-assign]
        launcher_module.WARM_SANDBOXES = warm
        await sup.probe()
    finally:
        _Tools.find = real_find  # type: ignore[method-assign]
        launcher_module.WARM_SANDBOXES = False
    if not sup.isolated or not sup.pid_namespace or (sup.launcher is not None) != launcher:
        raise SystemExit(f"cannot isolate nodes this way here (run as root): {sup.weaknesses}")
    return sup


def _replace_launcher(tools: _Tools) -> _Tools:
    return _Tools(tools.sh, tools.mount, tools.unshare, tools.setpriv, launcher=False)


def supervised(sup: Supervisors, data_dir: Path) -> tuple[Launch, Settle]:
    argv = ["sh", "-c", "true"]
    env = Supervisors.supervisor_env(_base_env("/tmp/workflow_space"))
    empty = str(sup.work_root / ".empty")
    children = []

    async def launch(scratch: Path) -> None:
        (scratch / "tmp" / "workflow_space").mkdir(parents=True)
        binds: list[Bind] = [(str(scratch / "tmp"), "/tmp", "tree"), (empty, str(data_dir), "ro")]
        child, _ = await sup.launch(scratch, scratch / "log", "/tmp/workflow_space", binds, argv, env)
        children.append(child)
        await _recorded(child)
        if (scratch / "exit").read_text().strip() != "0":
            raise RuntimeError(f"the node failed: {(scratch / 'log').read_text()}")

    async def settle() -> None:
        for child in children:
            await _ended(child)
        children.clear()

    return launch, settle


async def _nothing() -> None:
    pass


async def bare(scratch: Path) -> None:
    scratch.mkdir(parents=True)
    proc = await asyncio.create_subprocess_exec("true")
    await proc.wait()


async def measure(
    launch: Launch, settle: Settle, sup: Supervisors | None, work: Path, n: int
) -> tuple[float, float]:
    """(CPU ms, wall ms) per launch."""
    before, started = _tree_cpu(sup), time.perf_counter()
    for i in range(n):
        await launch(work / str(i))
    wall = time.perf_counter() - started
    await settle()
    used = _tree_cpu(sup) - before
    shutil.rmtree(work, ignore_errors=True)
    return 1000 * used / n, 1000 * wall / n


async def main_async(launches: int, rounds: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="aihub-launch-", dir="/var/tmp"))
    try:
        ways = {
            "launcher": await probed(data_dir, True),
            "launcher, warm sandboxes": await probed(data_dir, True, warm=True),
            "unshare chain": await probed(data_dir, False),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in (*ways, "bare")}
        for r in range(rounds):
            for name, sup in ways.items():
                launch, settle = supervised(sup, data_dir)
                work = data_dir / "runs" / f"{name}-{r}"
                results[name].append(await measure(launch, settle, sup, work, launches))
            work = data_dir / "runs" / f"bare-{r}"
            results["bare"].append(await measure(bare, _nothing, None, work, launches))
        one, five, fifteen = os.getloadavg()
        print(
            f"{launches} launches x {rounds} rounds, one at a time; load {one:.1f} {five:.1f} {fifteen:.1f}"
        )
        print(f"{'way':<34} {'CPU ms/launch':>14} {'wall ms/launch':>15}   (median of rounds; all rounds)")
        for name, rows in results.items():
            cpu = sorted(c for c, _ in rows)[len(rows) // 2]
            wall = sorted(w for _, w in rows)[len(rows) // 2]
            every = ", ".join(f"{c:.2f}/{w:.2f}" for c, w in rows)
            print(f"{name:<34} {cpu:>14.2f} {wall:>15.2f}   ({every})")
        for sup in ways.values():
            await sup.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--launches", type=int, default=300, help="launches per way and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main_async(args.launches, args.rounds))


if __name__ == "__main__":
    main()
