"""Per-job overhead of the local executor against a bare asyncio subprocess running `true`.

    .venv/bin/python bench/executor_overhead.py [--jobs 200] [--rounds 4]

Runs ``jobs`` sequential ``true`` jobs through ``LocalExecutor.start`` + ``wait`` (with mount isolation where
available, and with isolation off) and through ``asyncio.create_subprocess_exec("true")`` + ``wait``. The
kinds take turns in ``rounds`` slices so that background load on the machine hits them alike; the report
gives the mean and median milliseconds per job and the executor's overhead over the bare subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aihub.engine.executors.base import Job, JobKey
from aihub.engine.executors.local import LocalExecutor
from aihub.storage.local import LocalArtifactStore, LocalLogStore

RunOne = Callable[[int], Awaitable[None]]


async def _executor(root: Path, isolation: str) -> LocalExecutor:
    executor = LocalExecutor(
        root / "runs",
        LocalArtifactStore(root / "artifacts"),
        LocalLogStore(root / "logs"),
        isolation=isolation,  # type: ignore[arg-type]
    )
    await executor.probe()
    return executor


def _via_executor(executor: LocalExecutor) -> RunOne:
    async def run(i: int) -> None:
        handle = await executor.start(Job(JobKey(1, "true", i), ["true"], {}))
        report = await executor.wait(handle)
        assert report.exit_code == 0, report

    return run


async def _bare(i: int) -> None:
    proc = await asyncio.create_subprocess_exec("true")
    assert await proc.wait() == 0


async def main(jobs: int, rounds: int, base: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="aihub-bench-", dir=base) as tmp:
        root = Path(tmp)
        isolated = await _executor(root / "isolated", "auto")
        plain = await _executor(root / "plain", "off")
        kinds: dict[str, RunOne] = {
            "bare asyncio subprocess": _bare,
            "local executor, isolation off": _via_executor(plain),
        }
        if isolated.supervisors.isolated:
            kinds["local executor, isolated"] = _via_executor(isolated)
        else:
            print(f"(mount isolation unavailable: {isolated.supervisors.isolation_reason})")
        timings: dict[str, list[float]] = {name: [] for name in kinds}
        cpu: dict[str, float] = dict.fromkeys(kinds, 0.0)
        for run in kinds.values():  # warm-up: imports, first forks, page cache
            for i in range(5):
                await run(jobs + i)
        per_round = jobs // rounds
        for r in range(rounds):
            for name, run in kinds.items():
                before = _cpu()
                for i in range(per_round):
                    started = time.perf_counter()
                    await run(r * per_round + i)
                    timings[name].append((time.perf_counter() - started) * 1000)
                cpu[name] += _cpu() - before
        await isolated.close()
        await plain.close()
    bare = statistics.median(timings["bare asyncio subprocess"])
    count = len(timings["bare asyncio subprocess"])
    print(f"{count} sequential `true` jobs per kind, ms per job (CPU: server + reaped children):")
    print(f"{'':32} {'mean':>7} {'median':>7} {'overhead (median)':>18} {'CPU':>7}")
    for name, values in timings.items():
        median = statistics.median(values)
        print(
            f"{name:32} {statistics.mean(values):7.2f} {median:7.2f} {median - bare:+18.2f}"
            f" {cpu[name] * 1000 / count:7.2f}"
        )


def _cpu() -> float:
    """CPU seconds of this process and of the children it has reaped (the supervisor waits for the node)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--dir", default=None, help="where work dirs, artifacts and logs go (default: $TMPDIR)"
    )
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.rounds, args.dir))
