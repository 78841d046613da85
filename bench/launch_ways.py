"""One way's launch cost in a process of its own (issue 18, round six): the A/B behind docs/benchmarks.md.

Run as root: ``python bench/launch_ways.py WAY CONCURRENCY [--launches N] [--tree DIR]`` with WAY ``launcher``
(the executor's own ``Supervisors.launch``, through the launcher), ``warm`` (the same, the launcher's warm
sandboxes on) or ``bare`` (``true`` from ``asyncio.create_subprocess_exec``). 50 launches warm up, then N are measured with CONCURRENCY at once. To
compare two versions, give another source tree (``git archive REV | tar -x -C DIR``) as ``--tree``: its
``aihub`` and its own ``bench/launch.py`` (its way of launching) are used; alternate the trees. Prints wall and CPU per launch: this process
with its reaped children, and the launcher with its sandboxes and what they reaped.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tree(pid: int | None) -> float:
    if pid is None:
        return 0.0
    total = 0.0
    for one in [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]:
        stat = Path(f"/proc/{one}/stat").read_bytes()
        total += sum(int(f) for f in stat[stat.rindex(b")") + 2 :].split()[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def _own() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


async def main_async(way: str, concurrency: int, launches: int) -> None:
    import launch as bench  # (the tree's: see main)

    data_dir = Path(tempfile.mkdtemp(prefix="aihub-launch-", dir="/var/tmp"))
    sup = (
        None
        if way == "bare"
        else await bench.probed(data_dir, True, **({"warm": True} if way == "warm" else {}))
    )
    launch, settle = (bench.bare, bench._nothing) if sup is None else bench.supervised(sup, data_dir)
    pid = sup.launcher.pid if sup is not None and sup.launcher is not None else None

    async def run(tag: str, count: int) -> None:
        names = iter(range(count))

        async def worker() -> None:
            for i in names:
                await launch(data_dir / "runs" / f"{tag}-{i}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await settle()

    try:
        await run("warm", 50)
        cpu, started = _own() + _tree(pid), time.perf_counter()
        await run("measured", launches)
        wall, cpu = time.perf_counter() - started, _own() + _tree(pid) - cpu
        print(
            f"{way:<8} x{concurrency}: wall {1000 * wall / launches:.2f} ms, CPU {1000 * cpu / launches:.2f} ms"
        )
    finally:
        if sup is not None:
            await sup.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("way", choices=["launcher", "warm", "bare"])
    parser.add_argument("concurrency", type=int)
    parser.add_argument("--launches", type=int, default=300)
    parser.add_argument(
        "--tree", type=Path, default=ROOT, help="the source tree to measure (default: this one)"
    )
    args = parser.parse_args()
    sys.path[:0] = [str(args.tree.resolve()), str(args.tree.resolve() / "bench")]
    asyncio.run(main_async(args.way, args.concurrency, args.launches))


if __name__ == "__main__":
    main()
