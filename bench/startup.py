"""What a user waits for on a small workflow: ``aihub run FILE`` as a whole process, start to exit.

Run from the repository root: ``.venv/bin/python bench/startup.py [--repeats 7] [--against OTHER_CHECKOUT]``.
Runs ``aihub run examples/pass-params-demo.yaml`` (the seed's two nodes) in a fresh data dir — the first run,
which creates and migrates the database, is reported apart — then ``--repeats`` more, warm. Baseline in the same
loop: ``python -c "import asyncio"`` (the interpreter's own start). With ``--against``, the other checkout's
``.venv/bin/aihub`` runs interleaved with this one's (its own data dir), so both meet the same load. Prints
the median wall and CPU (user + system, of the process and its children) per run. docs/benchmarks.md ("CLI
start-up") holds the figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "examples/pass-params-demo.yaml"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    cpu, start = _children_cpu(), time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, _children_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--against", type=Path, help="another checkout (with its own .venv) to compare with")
    args = parser.parse_args()

    checkouts = {"this": ROOT, **({"against": args.against.resolve()} if args.against else {})}
    cases: dict[str, tuple[list[str], dict[str, str], Path]] = {
        "python -c 'import asyncio'": (
            [sys.executable, "-c", "import asyncio"],
            dict(os.environ),
            Path.cwd(),
        ),
    }
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        for name, root in checkouts.items():
            env = {k: v for k, v in os.environ.items() if not k.startswith("AIHUB_")}
            env["AIHUB_DATA_DIR"] = str(Path(tmp) / name)
            argv = [str(root / ".venv/bin/aihub"), "run", str(root / EXAMPLE)]
            wall, cpu = _timed(argv, env, Path(tmp))
            print(f"{name} ({root}): first run (new database) {wall:.2f} s wall, {cpu:.2f} s CPU")
            cases[f"aihub run ({name})"] = (argv, env, Path(tmp))
        results: dict[str, list[tuple[float, float]]] = {case: [] for case in cases}
        for _ in range(args.repeats):
            for case, (argv, env, cwd) in cases.items():
                results[case].append(_timed(argv, env, cwd))
    print(f"\nmedian of {args.repeats} warm runs, interleaved (load average {os.getloadavg()[0]:.1f})")
    print(f"{'':32} {'wall s':>8} {'CPU s':>8}")
    for case, runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        print(f"{case:32} {wall:8.2f} {cpu:8.2f}")


if __name__ == "__main__":
    main()
