"""Engine benchmark (issue 3, point 9): the real engine against a minimal asyncio pool, on no-op nodes.

Run from the repository root: ``.venv/bin/python bench/engine.py [--quick] [--profile] [--repeats N]``.
``AIHUB_DATABASE_URL`` selects the database (default: SQLite in a fresh data dir under /var/tmp; with
``--journaled-ext4`` on a fresh ext4 with a journal, loop-mounted: this machine's disk has none, see
``data_fs.py``).
docs/benchmarks.md explains the choices and holds the figures.

- **overhead**: 1,000 ``true`` nodes in three shapes — a chain, 10 layers x 100 (node *i* of layer *k*
  depends on node *i* of layer *k-1*), and a fan-out 1→999 — on the built-in ``local`` cluster with 2 CPUs.
  Each is timed through the whole engine (``create_run`` → the run's SUCCEEDED event) and through a minimal
  pool in the same process: ``asyncio.create_subprocess_exec("true")`` under a semaphore of 2, following the
  same edges. A second pool launches, per node, what the local executor launches, the way it does (as root,
  the launcher's warm sandboxes, or with ``--per-node-namespaces`` new namespaces and ``shim.sh`` for each
  node; else ``unshare`` + ``shim.sh`` + ``mount``; then ``sh -c true``): it separates the price of the
  process chain from the engine's own. Both the engine and the bare pool report "running": the mean number of
  nodes running (each from just before its spawn to its end heard), of the 2 slots; and, for the fan-out, what
  empties a slot: each node's end to the next start on its slot (``refill_gaps``), beside the nodes' mean span.
- **working nodes**: a fan-out of ``sleep 0.05`` nodes (a fifth of the overhead's size), through the engine
  and through the bare pool: how many of the 2 slots each keeps busy when nodes outlast the hand-off.
- **bound**: the shim pool's fan-out with 0, 0.25, 0.5 and 1 ms of CPU spent on the event loop after each
  node's end, before its slot is free: how many slots ``true`` nodes keep busy against what the loop spends a
  node (on 2 CPUs the loop and the nodes share the machine), beside the engine's own loop CPU and "running".
- **hand-off**: a 200-node chain of ``date +%s.%N`` nodes; parent exit → child start from the Attempt rows
  (the parent's ``finished_at`` is when its sandbox reaped it, or the launcher heard its supervisor's word, a
  fraction of a millisecond after the exit — as root; else the mtime of its ``exit`` file, the kernel's coarse clock: a tick, 4 ms
  here, and a new file's mtime lags its write by 2-6 ms, which overstates the hand-off by about that; the
  child's ``started_at`` is taken just before its supervisor is spawned), from the parent's own clock (the
  time it printed, its last act, to the child's ``started_at``: exact to the node's exit, so a little
  over), and for comparison from the node events' ``created_at``.
- **scale**: 10 layers x 1,000 against 10 layers x 100, each in a fresh child process: wall time, CPU, and
  peak RSS growth (the kernel's high-water mark, reset once the runtime is up).
- ``--profile``: cProfile of the 1,000-node layered run (the event-loop thread's CPU time, ``time.thread_time``);
  prints the top functions.

The engine's own CPU is also split by thread (``/proc/self/task``): the event loop, asyncio's worker threads
(``to_thread``: the local executor's file work and spawn), the database client's thread (aiosqlite), others.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import heapq
import io
import json
import os
import platform
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_fs import file_system, journaled_ext4  # noqa: E402  (bench/, this script's directory)

from aihub.bus.base import Subscription  # noqa: E402
from aihub.db.models import Attempt, NodeEvent, User  # noqa: E402
from aihub.domain.status import RunStatus  # noqa: E402
from aihub.engine.executors import launcher as launcher_module  # noqa: E402
from aihub.engine.executors.local import LocalExecutor  # noqa: E402
from aihub.engine.executors.local_supervisors import _base_env, _recorded  # noqa: E402
from aihub.runtime import Runtime, open_runtime  # noqa: E402
from aihub.services.runs import create_run  # noqa: E402
from aihub.services.users import create_user  # noqa: E402
from aihub.services.workflows import create_workflow  # noqa: E402
from aihub.settings import Settings  # noqa: E402

CPUS = 2
LAUNCHER_SCRIPT = b"executors/launcher.py"
BENCH_USER = "bench"
Parents = dict[str, list[str]]  # node -> the nodes it depends on, in declaration (topological) order


@dataclass(frozen=True)
class Sizes:
    nodes: int  # per shape in the overhead benchmark
    width: int  # nodes per layer of the layered shape (10 layers)
    chain: int  # hand-off chain length
    scale: int  # the large run (10 layers); compared with a run of scale / 10 nodes
    repeats: int  # engine/pool measurements per shape; the median is reported


FULL = Sizes(nodes=1000, width=100, chain=200, scale=10_000, repeats=3)
QUICK = Sizes(nodes=200, width=20, chain=50, scale=2000, repeats=1)


# ------------------------------------------------------------------------------------------------ shapes


def chain(n: int) -> Parents:
    return {f"n{i}": [f"n{i - 1}"] if i else [] for i in range(n)}


def layered(n: int, width: int) -> Parents:
    """``n / width`` layers; node ``i`` of a layer depends on node ``i`` of the layer before."""
    return {f"l{k}_{i}": [f"l{k - 1}_{i}"] if k else [] for k in range(n // width) for i in range(width)}


def fan_out(n: int) -> Parents:
    return {"root": [], **{f"n{i}": ["root"] for i in range(1, n)}}


def to_spec(name: str, parents: Parents, command: str = "true") -> dict[str, Any]:
    nodes = [{"name": node, "command": command, "depends_on": ps} for node, ps in parents.items()]
    return {"name": name, "nodes": nodes}


# -------------------------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Measure:
    """Wall seconds, and CPU seconds of this process and of its reaped child processes."""

    wall: float
    cpu_self: float
    cpu_children: float
    running: float | None = None  # engine runs: mean number of attempts running (of the CPUS slots)
    gaps: tuple[float, ...] = ()  # seconds from each end to the start that took its slot (``refill_gaps``)
    span: float | None = None  # mean seconds a node spans (its start to its end heard)
    threads: dict[str, float] | None = None  # engine runs: CPU seconds of this process's threads, by kind


async def measured(work: Awaitable[Any]) -> tuple[Any, Measure]:
    before, started = _cpu(), time.perf_counter()
    result = await work
    wall, after = time.perf_counter() - started, _cpu()
    return result, Measure(wall, after[0] - before[0], after[1] - before[1])


def _cpu() -> tuple[float, float]:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime + _launchers_cpu()


def _launchers_cpu() -> float:
    """CPU seconds of the local executor's launchers (children of this process that live on) and of their warm
    sandboxes (the launchers' children), with the processes they reaped, which getrusage of this process does
    not see."""
    launchers, rest = {}, {}
    with os.scandir("/proc") as entries:
        for entry in entries:
            try:
                stat = Path(entry.path, "stat").read_bytes()
                cmdline = Path(entry.path, "cmdline").read_bytes()
            except (OSError, NotADirectoryError):
                continue
            fields = stat[stat.rindex(b")") + 2 :].split()
            if LAUNCHER_SCRIPT in cmdline:  # (utime stime cutime cstime)
                cpu = sum(int(f) for f in fields[11:15])
                (launchers if int(fields[1]) == os.getpid() else rest)[int(entry.name)] = (
                    int(fields[1]),
                    cpu,
                )
    total = sum(cpu for _, cpu in launchers.values())
    total += sum(cpu for parent, cpu in rest.values() if parent in launchers)
    return total / os.sysconf("SC_CLK_TCK")


THREAD_KINDS = ("event loop", "worker threads", "database thread", "other")


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far of this process's live threads, by kind (``THREAD_KINDS``)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    loop = threading.main_thread().native_id
    totals = dict.fromkeys(THREAD_KINDS, 0.0)
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path("/proc/self/task", tid, "stat").read_bytes()
        except OSError:
            continue  # ended meanwhile
        fields = stat[stat.rindex(b")") + 2 :].split()
        name = names.get(int(tid), "")
        kind = (
            "event loop"
            if int(tid) == loop
            else "worker threads"
            if name.startswith("asyncio_")
            else "database thread"
            if "_connection_worker_thread" in name
            else "other"
        )
        totals[kind] += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return totals


Span = tuple[float, float]  # a node's (start, end), seconds on one clock


def with_spans(measure: Measure, spans: Sequence[Span]) -> Measure:
    """``measure`` with its mean number of nodes running and the refill gaps of its slots (``spans``)."""
    total = sum(end - start for start, end in spans)
    gaps = tuple(refill_gaps(spans))
    return replace(measure, running=total / measure.wall, gaps=gaps, span=total / max(len(spans), 1))


def refill_gaps(spans: Iterable[Span]) -> list[float]:
    """For each node that started on a slot another node had left: the time from that node's end to this
    start (the earliest end not yet taken over, as a FIFO pool hands slots on). Starts on a slot no node had
    used yet (while fewer ran at once than there are slots: the spans say so themselves) have none. What keeps
    a slot empty between two nodes: with nodes of span S on N slots, slot use is about ``N * S / (S + gap)``."""
    running: list[float] = []  # ends of the nodes running at the start looked at (a heap)
    # ends not yet taken over by a start, in order (an end heard at a later start is after every start before)
    freed: deque[float] = deque()
    gaps = []
    for start, end in sorted(spans):
        while running and running[0] <= start:
            freed.append(heapq.heappop(running))
        if freed:
            gaps.append(start - freed.popleft())
        heapq.heappush(running, end)
    return gaps


def median_measure(values: list[Measure]) -> Measure:
    """The measurement with the median wall time (its CPU figures are of the same run)."""
    return sorted(values, key=lambda m: m.wall)[len(values) // 2]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, -(-len(ordered) * q // 100) - 1))]  # type: ignore[call-overload]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f} {five:.1f} {fifteen:.1f}"


# --------------------------------------------------------------------------------------------- the engine


@asynccontextmanager
async def bench_runtime(data_root: Path) -> AsyncIterator[tuple[Runtime, User]]:
    """A runtime on a fresh data dir in ``data_root`` (not /tmp: nodes have their own), with the bench user."""
    data_dir = Path(tempfile.mkdtemp(prefix="aihub-bench-", dir=data_root))
    try:
        async with open_runtime(Settings(data_dir=data_dir, local_cpus=CPUS)) as rt:
            user = await User.get_or_none(username=BENCH_USER)  # a shared PostgreSQL database has it
            yield rt, user or await create_user(BENCH_USER, "bench-password-1")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def engine_run(
    rt: Runtime, user: User, parents: Parents, label: str, command: str = "true"
) -> tuple[int, Measure]:
    """Save a workflow of ``parents`` and run it; measured from ``create_run`` to the run's end event."""
    version = await create_workflow(user, to_spec(f"bench-{label}-{uuid.uuid4().hex[:8]}", parents, command))
    sub = rt.bus.subscribe(runs_only=True)  # the run's end: not woken for each node event
    threads_before = thread_cpu()
    try:
        (run_id, status), measure = await measured(_run_to_end(rt, user, version.id, sub))
    finally:
        sub.close()
    threads = {k: v - threads_before[k] for k, v in thread_cpu().items()}
    if status != RunStatus.SUCCEEDED.value:
        raise RuntimeError(f"bench run {run_id} ({label}) ended {status}")
    attempts = await Attempt.filter(node_run__run_id=run_id).values_list("started_at", "finished_at")
    spans = [(start.timestamp(), end.timestamp()) for start, end in attempts]
    return run_id, replace(with_spans(measure, spans), threads=threads)


async def _run_to_end(rt: Runtime, user: User, version_id: int, sub: Subscription) -> tuple[int, str]:
    run_id = (await create_run(rt.bus, user, version_id)).id  # the API's answer is not kept either
    terminal = {s.value for s in RunStatus if s.is_terminal}
    async for event in sub:
        if event.run_id == run_id and event.node is None and event.run_status in terminal:
            return run_id, event.run_status
    raise RuntimeError("the bus closed")


# ------------------------------------------------------------------------------------------ the baseline


async def pool_run(parents: Parents, launch: Callable[[str], Awaitable[None]], slots: int = CPUS) -> None:
    """Run every node with ``launch`` under a semaphore of ``slots``, each once all its parents are done."""
    children: Parents = {name: [] for name in parents}
    for name, ps in parents.items():
        for p in ps:
            children[p].append(name)
    blocked = {name: len(ps) for name, ps in parents.items()}
    sem = asyncio.Semaphore(slots)

    async def node(name: str) -> None:
        async with sem:
            await launch(name)
        for child in children[name]:
            blocked[child] -= 1
            if blocked[child] == 0:
                tg.create_task(node(child))

    async with asyncio.TaskGroup() as tg:  # ends once every node, so every task a node created, is done
        for name, ps in parents.items():
            if not ps:
                tg.create_task(node(name))


def bare_launcher(argv: Sequence[str], spans: list[Span]) -> Callable[[str], Awaitable[None]]:
    """Launch ``argv`` per node, nothing else; each node's span from its spawn to its reaping goes to ``spans``
    (what an attempt of the engine spans: from just before its spawn to its end heard)."""

    async def launch(name: str) -> None:
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(*argv)
        if await proc.wait() != 0:
            raise RuntimeError(f"{argv[0]} failed")
        spans.append((started, time.perf_counter()))

    return launch


async def bare_pool_run(parents: Parents, argv: Sequence[str] = ("true",)) -> Measure:
    """The bare pool of ``argv`` nodes, measured, with its mean number of nodes running."""
    spans: list[Span] = []
    _, measure = await measured(pool_run(parents, bare_launcher(argv, spans)))
    return with_spans(measure, spans)


def shim_launcher(
    rt: Runtime, work: Path, names: Iterable[str], spans: list[Span] | None = None, loop_cpu_ms: float = 0.0
) -> Callable[[str], Awaitable[None]]:
    """Launch per node what the local executor launches, the way it launches it (through its launcher, or its
    unshare(1) chain: mount and PID namespaces, the shim, the /tmp bind, the data dir's hiding and setpriv to
    the node user; or, by default, the node itself in one of the launcher's warm sandboxes), nothing else: no
    database, no scheduler, no scratch files but the dirs, made ahead. A slot is free once the executor would
    see the node's end (its status recorded, what it left killed), as in the engine. Each node's time from
    just before its launch to its end heard goes to ``spans``; with ``loop_cpu_ms``, the event loop then
    spends that much CPU before the slot is free (as the engine records an end, then frees its capacity)."""
    executor = rt.executor
    assert isinstance(executor, LocalExecutor)
    isolated = executor.supervisors.isolated
    empty = str(executor.work_root / ".empty")
    hidden = [p for p in executor.supervisors.private_paths if not p.is_relative_to("/tmp") and p.is_dir()]
    argv = ["sh", "-c", "true"]
    for name in names:  # made ahead, as the engine's spare scratch dirs are (not on the measured path)
        (work / name / "tmp" / "workflow_space").mkdir(parents=True)

    async def launch(name: str) -> None:
        started = time.perf_counter()
        scratch = work / name
        binds = [(str(scratch / "tmp"), "/tmp", "tree")] if isolated else []
        binds += [(empty, str(path), "ro") for path in hidden] if isolated else []
        env = executor.supervisors.supervisor_env(_base_env("/tmp/workflow_space"))
        child, _ = await executor.supervisors.launch(
            scratch, scratch / "log", "/tmp/workflow_space", binds, argv, env
        )
        await _recorded(child)
        if (scratch / "exit").read_text().strip() != "0":
            raise RuntimeError(f"the shim failed: {(scratch / 'log').read_text()}")
        if spans is not None:
            spans.append((started, time.perf_counter()))
        if loop_cpu_ms:  # (the bound section's; the shim pool itself spends nothing here)
            busy_until = time.thread_time() + loop_cpu_ms / 1000
            while time.thread_time() < busy_until:
                pass

    return launch


# ----------------------------------------------------------------------------------------------- sections


@dataclass
class Overhead:
    shape: str
    nodes: int
    engine: Measure
    pool: Measure
    shim_pool: Measure

    @property
    def ratio(self) -> float:
        return self.engine.wall / self.pool.wall


async def bench_overhead(rt: Runtime, user: User, sizes: Sizes) -> list[Overhead]:
    shapes = {
        "chain": chain(sizes.nodes),
        f"layered {sizes.nodes // sizes.width}x{sizes.width}": layered(sizes.nodes, sizes.width),
        f"fan-out 1->{sizes.nodes - 1}": fan_out(sizes.nodes),
    }
    work = rt.settings.data_dir / "shim-pool"
    rows = []
    for shape, parents in shapes.items():
        engine, pool, shim = [], [], []
        for _ in range(sizes.repeats):  # interleaved, so drift of the machine's load hits all three
            engine.append((await engine_run(rt, user, parents, shape.split()[0]))[1])
            pool.append(await bare_pool_run(parents))
            shutil.rmtree(work, ignore_errors=True)
            spans: list[Span] = []
            _, measure = await measured(pool_run(parents, shim_launcher(rt, work, parents, spans)))
            shim.append(with_spans(measure, spans))
        rows.append(Overhead(shape, len(parents), *map(median_measure, (engine, pool, shim))))
        walls = "; ".join(
            f"{what} " + " ".join(f"{m.wall:.2f}" for m in ms)
            for what, ms in (("engine", engine), ("pool", pool), ("shim pool", shim))
        )
        print(f"  {shape}: {walls} s; {load()}", file=sys.stderr)
    return rows


#: the working nodes' command: long enough that a node's own time, not the hand-off, fills a slot
WORK_SECONDS = "0.05"


@dataclass(frozen=True)
class Working:
    nodes: int
    engine: Measure
    pool: Measure


async def bench_working(rt: Runtime, user: User, sizes: Sizes) -> Working:
    """A fan-out of ``sleep 0.05`` nodes (a fifth of the overhead's size): the engine against the bare pool,
    and how many of the 2 slots each keeps running when a node lasts longer than the engine's hand-off."""
    parents = fan_out(sizes.nodes // 5)
    engine, pool = [], []
    for _ in range(sizes.repeats):
        engine.append((await engine_run(rt, user, parents, "working", f"sleep {WORK_SECONDS}"))[1])
        pool.append(await bare_pool_run(parents, ("sleep", WORK_SECONDS)))
    walls = "; ".join(
        f"{what} " + " ".join(f"{m.wall:.2f}" for m in ms)
        for what, ms in (("engine", engine), ("pool", pool))
    )
    print(f"  working fan-out: {walls} s; {load()}", file=sys.stderr)
    return Working(len(parents), median_measure(engine), median_measure(pool))


#: the event loop's CPU a node (ms) that the bound section adds to the shim pool's fan-out
LOOP_CPU_MS = (0.0, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class Bound:
    loop_cpu_ms: float
    shim_pool: Measure  # with its mean number of nodes running


async def bench_bound(rt: Runtime, sizes: Sizes) -> list[Bound]:
    """Slot use against the event loop's own CPU a node: the shim pool's fan-out (the engine's launch path,
    without database or scheduler) with the loop spending ``LOOP_CPU_MS`` of CPU after each node's end, before
    its slot is free. On 2 CPUs the loop and the nodes share the machine: with ``true`` nodes, what the loop
    spends a node bounds how many slots stay busy, however the nodes are launched."""
    parents = fan_out(sizes.nodes)
    work = rt.settings.data_dir / "shim-pool"
    runs: dict[float, list[Measure]] = {ms: [] for ms in LOOP_CPU_MS}
    for _ in range(sizes.repeats):
        for ms in LOOP_CPU_MS:
            shutil.rmtree(work, ignore_errors=True)
            spans: list[Span] = []
            _, m = await measured(pool_run(parents, shim_launcher(rt, work, parents, spans, ms)))
            runs[ms].append(with_spans(m, spans))
    shutil.rmtree(work, ignore_errors=True)
    cells = "; ".join(f"{ms} ms " + " ".join(f"{m.running:.2f}" for m in v) for ms, v in runs.items())
    print(f"  bound, running: {cells}; {load()}", file=sys.stderr)
    return [Bound(ms, median_measure(v)) for ms, v in runs.items()]


@dataclass
class Handoff:
    attempts: list[float]  # ms: parent Attempt.finished_at -> child Attempt.started_at
    events: list[float]  # ms: parent "exited" event -> child "started" event (created_at)
    clock: list[float]  # ms: the time the parent printed (its last act) -> child Attempt.started_at


async def bench_handoff(rt: Runtime, user: User, sizes: Sizes) -> Handoff:
    parents = chain(sizes.chain)
    run_id, _ = await engine_run(rt, user, parents, "handoff", "date +%s.%N")
    attempts = {
        a.node_run.name: a for a in await Attempt.filter(node_run__run_id=run_id).prefetch_related("node_run")
    }
    events = {
        (e.node, e.kind): e.created_at
        for e in await NodeEvent.filter(run_id=run_id, kind__in=["started", "exited"])
    }
    result = Handoff([], [], [])
    for child, ps in parents.items():
        if not ps:
            continue
        parent, attempt = attempts[ps[0]], attempts[child]
        exited = parent.finished_at.timestamp()
        result.attempts.append(1000 * (attempt.started_at.timestamp() - exited))
        printed = float(rt.logs.path(run_id, ps[0], parent.number).read_text().split()[-1])
        result.clock.append(1000 * (attempt.started_at.timestamp() - printed))
        result.events.append(
            1000 * (events[child, "started"].timestamp() - events[ps[0], "exited"].timestamp())
        )
    return result


@dataclass
class Scale:
    nodes: int
    create_workflow: float
    run: Measure
    peak_rss_mib: float
    rss_growth_mib: float


async def scale_child(n: int, data_root: Path) -> Scale:
    """One layered run of ``n`` nodes (10 layers) in this fresh process."""
    async with bench_runtime(data_root) as (rt, user):
        # the client's side is made before the baseline and not kept: the request body (the spec), and of
        # the saved version only its id, so the growth is the server's (an API request drops both)
        spec = to_spec(f"bench-scale-{uuid.uuid4().hex[:8]}", layered(n, n // 10))
        Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark (argon2 took 64 MiB)
        rss_before = _rss_mib("VmRSS")
        started = time.perf_counter()
        version_id = (await create_workflow(user, spec)).id
        created = time.perf_counter() - started
        del spec
        sub = rt.bus.subscribe(runs_only=True)
        try:
            (_, status), measure = await measured(_run_to_end(rt, user, version_id, sub))
        finally:
            sub.close()
        if status != RunStatus.SUCCEEDED.value:
            raise RuntimeError(f"scale run ended {status}")
        peak = _rss_mib("VmHWM")
        return Scale(n, created, measure, peak, peak - rss_before)


def _rss_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def bench_scale(sizes: Sizes, data_root: Path) -> list[Scale]:
    """Each size in a fresh process, so the peak RSS is that run's alone."""
    rows = []
    for n in (sizes.scale // 10, sizes.scale):
        argv = [sys.executable, __file__, "--scale-child", str(n), "--data-root", str(data_root)]
        argv += [] if launcher_module.WARM_SANDBOXES else ["--per-node-namespaces"]
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        raw = json.loads(out.splitlines()[-1])
        rows.append(Scale(**{**raw, "run": Measure(**raw["run"])}))
        print(f"  {n} nodes: {rows[-1].run.wall:.1f} s; {load()}", file=sys.stderr)
    return rows


async def bench_profile(rt: Runtime, user: User, sizes: Sizes, dump: Path | None, top: int = 30) -> str:
    parents = layered(sizes.nodes, sizes.width)
    profiler = cProfile.Profile(time.thread_time)  # the event loop's CPU, not its waits in epoll
    profiler.enable()
    _, measure = await engine_run(rt, user, parents, "profile")
    profiler.disable()
    if dump is not None:
        profiler.dump_stats(dump)
    out = io.StringIO()
    out.write(f"layered run of {len(parents)} nodes under cProfile: {measure.wall:.2f} s\n")
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# ------------------------------------------------------------------------------------------------- report


def machine() -> str:
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    return f"{os.cpu_count()} x {cpu}, Linux {platform.release()}, Python {platform.python_version()}"


def revision() -> str:
    """The commit measured, and whether the engine's files differ from it."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "aihub/engine", "aihub/services", "aihub/db", "aihub/bus"],
        capture_output=True,
        text=True,
    ).stdout
    return head.strip() + (" + uncommitted changes to the engine" if dirty.strip() else "")


def gap_cell(m: Measure) -> str:
    """A measurement's refill gaps (p50 / p90) and its nodes' mean span, in ms."""
    if not m.gaps or m.span is None:
        return "-"
    return (
        f"{1000 * percentile(m.gaps, 50):.2f} / {1000 * percentile(m.gaps, 90):.2f}, span {1000 * m.span:.2f}"
    )


def per_node(m: Measure, n: int) -> str:
    return f"{1000 * m.cpu_self / n:5.1f} + {1000 * m.cpu_children / n:4.1f}"


def print_report(
    rows: list[Overhead],
    working: Working,
    bound: list[Bound],
    handoff: Handoff,
    scale: list[Scale],
    isolation: str,
    data_root: Path,
) -> None:
    backend = Settings().resolved_database_url.split(":", 1)[0]
    print(f"machine: {machine()}; commit {revision()}")
    print(
        f"database: {backend}; data dirs in {data_root} ({file_system(data_root)}); node isolation: {isolation};"
        f" local_cpus={CPUS}"
    )
    print(load())
    print()
    print("wall s (CPU ms per node: this process + node processes); running: mean nodes running (of 2 slots)")
    print(
        f"{'shape':<16} {'engine':>20} {'running':>7} {'pool (true)':>20} {'running':>7} {'ratio':>6}"
        f" {'shim pool':>20} {'engine/shim':>11}"
    )
    for r in rows:
        cells = [f"{m.wall:6.2f} ({per_node(m, r.nodes)})" for m in (r.engine, r.pool, r.shim_pool)]
        print(
            f"{r.shape:<16} {cells[0]:>20} {r.engine.running or 0:>7.2f} {cells[1]:>20} {r.pool.running or 0:>7.2f}"
            f" {r.ratio:>6.2f} {cells[2]:>20} {r.engine.wall / r.shim_pool.wall:>11.2f}"
        )
    w = working
    print(
        f"working nodes (sleep {WORK_SECONDS}), fan-out 1->{w.nodes - 1}: engine {w.engine.wall:.2f} s, running"
        f" {w.engine.running or 0:.2f}; pool {w.pool.wall:.2f} s, running {w.pool.running or 0:.2f};"
        f" ratio {w.engine.wall / w.pool.wall:.2f}"
    )
    fan = rows[-1]
    print(
        f"slot use against the event loop's CPU a node ({fan.shape}, the shim pool with that much CPU spent on"
        f" the loop after each end): "
        + "; ".join(
            f"{b.loop_cpu_ms:.2f} ms: {b.shim_pool.wall:.2f} s, running {b.shim_pool.running or 0:.2f}"
            for b in bound
        )
        + f"; the engine: {1000 * (fan.engine.threads or {}).get('event loop', 0.0) / fan.nodes:.2f} ms,"
        f" running {fan.engine.running or 0:.2f}"
    )
    print(
        f"what empties a slot ({fan.shape}): a node's end -> the next start on its slot, ms p50 / p90; mean span"
        f" ms (running = {CPUS} x span / (span + gap)): "
        + "; ".join(
            f"{what} {gap_cell(m)}"
            for what, m in (("engine", fan.engine), ("pool", fan.pool), ("shim pool", fan.shim_pool))
        )
    )
    print()
    print("engine CPU ms per node by thread (of 'this process' above):")
    print(f"{'shape':<16} " + " ".join(f"{k:>15}" for k in THREAD_KINDS))
    for r in rows:
        threads = r.engine.threads or {}
        cells = " ".join(f"{1000 * threads.get(k, 0.0) / r.nodes:>15.2f}" for k in THREAD_KINDS)
        print(f"{r.shape:<16} {cells}")
    print()
    print(f"hand-off on a {len(handoff.attempts) + 1}-node chain, ms       p50     p99     max")
    for label, values in (
        ("exit -> child start (Attempt rows)", handoff.attempts),
        ("parent's clock -> child start", handoff.clock),
        ("'exited' event -> 'started' event", handoff.events),
    ):
        p50, p99 = percentile(values, 50), percentile(values, 99)
        print(f"  {label:<38} {p50:>6.1f} {p99:>7.1f} {max(values):>7.1f}")
    print()
    print(
        f"{'nodes':>7} {'create_workflow s':>18} {'run s':>8} {'CPU ms/node':>14} {'peak RSS MiB':>13} {'growth MiB':>11}"
    )
    for s in scale:
        print(
            f"{s.nodes:>7} {s.create_workflow:>18.2f} {s.run.wall:>8.2f} {per_node(s.run, s.nodes):>14}"
            f" {s.peak_rss_mib:>13.1f} {s.rss_growth_mib:>11.1f}"
        )
    small, large = scale
    print(
        f"{large.nodes} vs 10 x {small.nodes}: time {large.run.wall / small.run.wall:.1f}x, "
        f"RSS growth {large.rss_growth_mib / max(small.rss_growth_mib, 0.1):.1f}x"
    )


async def main_async(sizes: Sizes, profile: bool, data_root: Path, dump: Path | None = None) -> None:
    print(f"start: {load()}", file=sys.stderr)
    async with bench_runtime(data_root) as (rt, user):
        assert isinstance(rt.executor, LocalExecutor)
        isolation = rt.executor.supervisors.isolation_reason or "private mount namespace"
        await engine_run(rt, user, chain(20), "warm-up")
        print("overhead ...", file=sys.stderr)
        rows = await bench_overhead(rt, user, sizes)
        print("working nodes ...", file=sys.stderr)
        working = await bench_working(rt, user, sizes)
        print("bound ...", file=sys.stderr)
        bound = await bench_bound(rt, sizes)
        print("hand-off ...", file=sys.stderr)
        handoff = await bench_handoff(rt, user, sizes)
        report = await bench_profile(rt, user, sizes, dump) if profile or dump else ""
    print("scale ...", file=sys.stderr)
    scale = bench_scale(sizes, data_root)
    print_report(rows, working, bound, handoff, scale, isolation, data_root)
    if report:
        print()
        print(report)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition (a smoke test)")
    parser.add_argument("--profile", action="store_true", help="also cProfile the layered run")
    parser.add_argument(
        "--profile-out", type=Path, help="--profile, and the raw cProfile stats written there (for pstats)"
    )
    parser.add_argument(
        "--data-root", type=Path, default=Path("/var/tmp"), help="where data dirs are made (default /var/tmp)"
    )
    parser.add_argument(
        "--journaled-ext4",
        action="store_true",
        help="data dirs on a fresh, loop-mounted ext4 with a journal made under --data-root (root only)",
    )
    parser.add_argument(
        "--per-node-namespaces",
        action="store_true",
        help="new namespaces and shim.sh for each node, not the launcher's warm sandboxes (the default)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        help=f"engine / pool / shim pool runs per shape, interleaved; the median is reported (default {FULL.repeats})",
    )
    parser.add_argument("--scale-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    launcher_module.WARM_SANDBOXES = not args.per_node_namespaces
    if args.scale_child:
        print(json.dumps(asdict(asyncio.run(scale_child(args.scale_child, args.data_root)))))
        return
    sizes = QUICK if args.quick else FULL
    if args.repeats:
        sizes = replace(sizes, repeats=args.repeats)
    with journaled_ext4(args.data_root) if args.journaled_ext4 else nullcontext(args.data_root) as root:
        asyncio.run(main_async(sizes, args.profile, root, args.profile_out))


if __name__ == "__main__":
    main()
