"""Our engine side by side with a peer (issue 18, point 4): Prefect 3, on the same three shapes, in one run.

Run from the repository root: ``.venv/bin/python bench/peers.py [--nodes 1000] [--repeats 2] [--journaled-ext4]``
(the last puts both systems' data on a fresh ext4 with a journal: this machine's disk has none, which slows
file creation for everyone after large removals; ``data_fs.py``).
Not part of ``make test``. Prefect lives in its own virtualenv, made on first use under
``$AIHUB_BENCH_CACHE`` (default ``~/.cache/aihub-bench``) with ``pip install 'prefect>=3.4,<4'``; our side is
this checkout's ``.venv/bin/aihub``. docs/benchmarks.md ("Peers") holds the figures and what they mean.

What is measured is what a user runs, as a whole process, warm (each system's home/data dir was used once by a
one-node run first, so database migrations are not counted):

- **ours**: ``aihub run FILE`` (embedded: SQLite, the local executor with its node isolation, 2 CPU slots via
  ``AIHUB_LOCAL_CPUS=2``), the spec's nodes ``command: true`` with ``depends_on`` edges.
- **Prefect**: ``python bench/peers_prefect.py`` — one flow, one task per node that runs ``sh -c true`` in a
  subprocess, ``ThreadPoolTaskRunner(max_workers=2)``, dependencies as ``wait_for``, Prefect's ephemeral
  local server (SQLite) that it starts itself when no API URL is set.

Per system and shape: wall time of the process, CPU time of every process it made (this process is a child
subreaper, so detached descendants are reaped here and their ``rusage`` counted too), peak RSS of the process
tree (sampled every 50 ms from /proc) and, on the chain, the hand-off parent exit -> child start (ours from
the Attempt rows; Prefect from the times its tasks took around their ``sh``). Shapes and systems interleave:
each repeat runs every shape on both, alternating which goes first.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from data_fs import file_system, journaled_ext4  # noqa: E402
from engine import Parents, chain, fan_out, layered, to_spec  # noqa: E402

PREFECT_REQUIREMENT = "prefect>=3.4,<4"
CPUS = 2
PR_SET_CHILD_SUBREAPER = 36


@dataclass
class Sample:
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    handoff_ms: list[float] = field(default_factory=list)


@dataclass
class Measured:
    system: str
    shape: str
    samples: list[Sample] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- processes


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def tree_rss_kib(root: int) -> int:
    """Resident set of ``root`` and its descendants (and of orphans re-parented to this process)."""
    total, todo, seen = 0, [root, os.getpid()], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            if pid != os.getpid():
                with open(f"/proc/{pid}/statm") as f:
                    total += int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


def measure(argv: Sequence[str], env: dict[str, str], cwd: Path, log: Path) -> tuple[float, float, float]:
    """Run ``argv`` to its end and every process it left behind; (wall s, CPU s, peak tree RSS MiB)."""
    peak = 0
    done = threading.Event()
    with log.open("ab") as out:
        began = time.perf_counter()
        child = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.05):
                peak = max(peak, tree_rss_kib(child.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cpu, status, wall = 0.0, None, 0.0
        while True:  # reap the command and every orphan it left, collecting their CPU time
            try:
                pid, code, usage = os.wait4(-1, 0)
            except ChildProcessError:
                break
            cpu += usage.ru_utime + usage.ru_stime
            if pid == child.pid:
                status, wall = code, time.perf_counter() - began
                child.returncode = os.waitstatus_to_exitcode(code)
        done.set()
        sampler.join()
    if status is None or child.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed with {child.returncode}; see {log}")
    return wall, cpu, peak / 1024


# ------------------------------------------------------------------------------------------- the systems


def prefect_python(cache: Path) -> Path:
    venv = cache / "prefect3"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if not marker.exists():
        print(f"installing {PREFECT_REQUIREMENT} into {venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", PREFECT_REQUIREMENT], check=True)
        marker.touch()
    return python


class Ours:
    name = "aihub run"

    def __init__(self, work: Path) -> None:
        self.data = work / "aihub-data"
        self.work = work
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AIHUB_", "XDG_"))}
        self.env |= {"AIHUB_DATA_DIR": str(self.data), "AIHUB_LOCAL_CPUS": str(CPUS), "HOME": str(work)}

    def run(self, shape: str, parents: Parents, log: Path) -> Sample:
        spec = self.work / f"{shape}.yaml"
        spec.write_text(yaml.safe_dump(to_spec(f"peers-{shape}", parents), sort_keys=False))
        argv = [str(ROOT / ".venv" / "bin" / "aihub"), "run", str(spec), "--no-cache", "--name", shape]
        wall, cpu, rss = measure(argv, self.env, self.work, log)
        return Sample(wall, cpu, rss, self.handoff(shape, parents) if shape == "chain" else [])

    def handoff(self, shape: str, parents: Parents) -> list[float]:
        with sqlite3.connect(self.data / "aihub.sqlite3") as db:
            rows = db.execute(
                "SELECT n.name, a.started_at, a.finished_at FROM attempt a JOIN node_run n ON a.node_run_id = n.id"
                " WHERE n.run_id = (SELECT max(id) FROM run WHERE name = ?)",
                (shape,),
            ).fetchall()
        times = {name: (_ts(started), _ts(finished)) for name, started, finished in rows}
        return [1000 * (times[node][0] - times[ps[0]][1]) for node, ps in parents.items() if ps]


class Prefect:
    name = "Prefect 3"

    def __init__(self, work: Path, python: Path) -> None:
        self.work = work
        self.python = python
        home = work / "prefect-home"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        self.env |= {"PREFECT_HOME": str(home), "PREFECT_LOGGING_LEVEL": "WARNING", "HOME": str(work)}
        self.result = work / "prefect-result.json"

    def run(self, shape: str, parents: Parents, log: Path) -> Sample:
        spec = self.work / f"{shape}.json"
        spec.write_text(json.dumps(parents))
        argv = ["sh", "-c", '"$0" "$1" "$2" "$3" > "$4"', str(self.python)]
        argv += [str(ROOT / "bench" / "peers_prefect.py"), str(spec), str(CPUS), str(self.result)]
        wall, cpu, rss = measure(argv, self.env, self.work, log)
        times = json.loads(self.result.read_text().strip().splitlines()[-1])["times"]
        handoff = [1000 * (times[n][0] - times[ps[0]][1]) for n, ps in parents.items() if ps]
        return Sample(wall, cpu, rss, handoff if shape == "chain" else [])


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


# ------------------------------------------------------------------------------------------- report


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(results: list[Measured], nodes: int) -> None:
    print(f"\n{nodes} no-op shell tasks per shape, {CPUS} slots; medians of the repeats")
    print(f"{'shape':<10} {'system':<10} {'wall s':>8} {'CPU s':>8} {'CPU ms/node':>12} {'peak RSS MiB':>13}")
    for m in results:
        wall = statistics.median(s.wall_s for s in m.samples)
        cpu = statistics.median(s.cpu_s for s in m.samples)
        rss = statistics.median(s.peak_rss_mib for s in m.samples)
        print(f"{m.shape:<10} {m.system:<10} {wall:8.1f} {cpu:8.1f} {1000 * cpu / nodes:12.2f} {rss:13.0f}")
    print("\nhand-off on the chain, parent exit -> child start, ms      p50     p99     max")
    for m in results:
        handoff = [h for s in m.samples for h in s.handoff_ms]
        if handoff:
            p50, p99 = percentile(handoff, 0.5), percentile(handoff, 0.99)
            print(f"  {m.system:<52} {p50:7.1f} {p99:7.1f} {max(handoff):7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, data dirs)")
    parser.add_argument(
        "--journaled-ext4",
        action="store_true",
        help="the work dir on a fresh, loop-mounted ext4 with a journal (root only; see bench/data_fs.py)",
    )
    args = parser.parse_args()
    become_subreaper()
    cache = Path(os.environ.get("AIHUB_BENCH_CACHE") or Path.home() / ".cache" / "aihub-bench")
    python = prefect_python(cache)
    under = Path("/var/tmp")
    with journaled_ext4(under) if args.journaled_ext4 else nullcontext(under) as root:
        compare(args, python, root)


def compare(args: argparse.Namespace, python: Path, under: Path) -> None:
    """Both systems on every shape, interleaved, with their data under ``under``; the report printed."""
    work = Path(tempfile.mkdtemp(prefix="aihub-peers-", dir=under))
    os.chmod(work, 0o755)
    shapes = {
        "chain": chain(args.nodes),
        "layered": layered(args.nodes, args.nodes // 10),
        "fan-out": fan_out(args.nodes),
    }
    systems = [Ours(work), Prefect(work, python)]
    log = work / "output.log"
    for system in systems:  # warm-up: each system's database made and migrated before anything is timed
        system.run("warm-up", {"only": []}, log)
    results = {(s.name, shape): Measured(s.name, shape) for shape in shapes for s in systems}
    for repeat in range(args.repeats):
        for i, (shape, parents) in enumerate(shapes.items()):
            order = systems if (repeat + i) % 2 == 0 else systems[::-1]
            for system in order:
                print(f"repeat {repeat + 1}: {shape} on {system.name} ...", file=sys.stderr)
                results[system.name, shape].samples.append(system.run(shape, parents, log))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, work dir {work} ({file_system(work)})")
    report(list(results.values()), args.nodes)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
