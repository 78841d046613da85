"""The shared capacity ledger (``aihub.services.capacity``) and the engine's use of it when several engine
workers share the virtual clusters (``AIHUB_SHARED_CAPACITY``)."""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from aihub.bus.memory import MemoryBus
from aihub.db.models import CapacityClaim, NodeRun, Run, User, VirtualCluster
from aihub.domain.status import NodeStatus, RunStatus
from aihub.engine import dispatch, scheduler
from aihub.engine.executors.base import Resources
from aihub.runtime import Runtime, build_executor
from aihub.services import capacity as ledger
from aihub.services.runs import create_run
from aihub.services.users import create_user
from aihub.services.workflows import create_workflow
from aihub.settings import Settings
from aihub.storage.local import build_storage
from tests.engine.support import start_run, wait_for_run
from tests.polling import gate_wait, until

CLUSTER = "shared"
SKU = Resources(cpu_millis=500, memory_mib=256)


def size(skus: int) -> Resources:
    return Resources(cpu_millis=SKU.cpu_millis * skus, memory_mib=SKU.memory_mib * skus)


def spec(*nodes: dict, name: str = "wf") -> dict:
    return {"name": name, "params": [], "nodes": list(nodes)}


@pytest.fixture
def shared_capacity() -> str:
    return "on"


@pytest.fixture
def settings(settings: Settings, shared_capacity: str) -> Settings:
    settings.shared_capacity = shared_capacity  # type: ignore[assignment]
    return settings


class LedgerSpy:
    """Counts the engine's calls into the ledger (the real functions still run)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], Any, float]] = []
        for name in ("try_claim", "record_claim", "release", "sweep"):
            monkeypatch.setattr(ledger, name, self._wrap(name, getattr(ledger, name)))

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        async def spy(*args: Any) -> Any:
            result = await fn(*args)
            self.calls.append((name, args, result, asyncio.get_running_loop().time()))
            return result

        return spy

    def nodes(self, name: str, result: Any = None) -> list[str]:
        return [args[-1] for n, args, r, _ in self.calls if n == name and (result is None or r == result)]

    def refusals(self) -> list[float]:
        return [t for n, _, r, t in self.calls if n == "try_claim" and r is False]


# ----------------------------------------------------------------- the service


@pytest.fixture
async def owner(db: Settings) -> User:
    return await create_user("alice", "alice-password-1")


async def new_run(owner: User, nodes: int) -> Run:
    """A run with WAITING nodes n0..n{nodes-1}; no engine runs here, so nothing moves by itself."""
    version = await create_workflow(
        owner, spec(*({"name": f"n{i}", "command": "true"} for i in range(nodes)))
    )
    return await create_run(MemoryBus(), owner, version.id)


async def claimed(run: Run | None = None) -> set[str]:
    query = CapacityClaim.filter(run_id=run.id) if run else CapacityClaim.all()
    return set(await query.values_list("node", flat=True))


async def test_concurrent_claims_grant_exactly_the_capacity(owner: User) -> None:
    """Hazard: a claim that reads the cluster's claims and then inserts lets concurrent claims (on PostgreSQL
    from separate pooled connections) all see room and over-commit the cluster."""
    run = await new_run(owner, 12)
    granted = await asyncio.gather(
        *(ledger.try_claim(CLUSTER, size(3), SKU, run.id, f"n{i}") for i in range(12))
    )
    assert sum(granted) == 3
    assert len(await claimed(run)) == 3


async def test_release_frees_room_and_a_held_claim_is_granted_again(owner: User) -> None:
    run = await new_run(owner, 3)
    assert await ledger.try_claim(CLUSTER, size(2), SKU, run.id, "n0")
    assert await ledger.try_claim(CLUSTER, size(2), SKU, run.id, "n1")
    assert not await ledger.try_claim(CLUSTER, size(2), SKU, run.id, "n2")
    assert await ledger.try_claim(CLUSTER, size(2), SKU, run.id, "n0")  # held already (a takeover)
    assert await claimed(run) == {"n0", "n1"}
    await ledger.release(run.id, "n0")
    assert await ledger.try_claim(CLUSTER, size(2), SKU, run.id, "n2")
    assert not await ledger.try_claim(CLUSTER, size(2), SKU, run.id, "n0")  # its room went to n2
    assert await claimed(run) == {"n1", "n2"}
    await ledger.release(run.id, "n0")  # holds none: nothing happens
    assert await ledger.try_claim("elsewhere", size(1), SKU, run.id, "n0")  # clusters are counted apart


async def test_every_resource_is_counted(owner: User) -> None:
    run = await new_run(owner, 2)
    total = Resources(cpu_millis=4000, memory_mib=1000, gpu=1)
    assert await ledger.try_claim(CLUSTER, total, Resources(cpu_millis=100, memory_mib=600), run.id, "n0")
    assert not await ledger.try_claim(CLUSTER, total, Resources(cpu_millis=100, memory_mib=600), run.id, "n1")
    assert await ledger.try_claim(
        CLUSTER, total, Resources(cpu_millis=100, memory_mib=1, gpu=1), run.id, "n1"
    )
    assert await claimed(run) == {"n0", "n1"}


async def test_sweep_drops_the_claims_of_nodes_that_are_over(owner: User) -> None:
    """Hazard: a worker that died before releasing would block its cluster forever."""
    run = await new_run(owner, 3)
    assert await ledger.try_claim(CLUSTER, size(2), SKU, run.id, "n0")
    assert await ledger.try_claim(CLUSTER, size(2), SKU, run.id, "n1")
    await NodeRun.filter(run_id=run.id, name="n0").update(status=NodeStatus.SUCCEEDED)
    assert await ledger.sweep(CLUSTER) == 1
    assert await claimed(run) == {"n1"}  # WAITING (being started) or RUNNING: kept

    # a refused claim sweeps before it is final
    await NodeRun.filter(run_id=run.id, name="n1").update(status=NodeStatus.FAILED)
    assert await ledger.try_claim(CLUSTER, size(2), size(2), run.id, "n2")
    assert await claimed(run) == {"n2"}

    # a finished run's claims go whatever its nodes say (fail-fast leaves nodes WAITING)
    await Run.filter(id=run.id).update(status=RunStatus.FAILED)
    assert await ledger.sweep(CLUSTER) == 1
    assert await claimed() == set()


async def test_a_running_node_is_recorded_even_over_capacity(owner: User) -> None:
    run = await new_run(owner, 2)
    assert await ledger.try_claim(CLUSTER, size(1), SKU, run.id, "n0")
    await ledger.record_claim(CLUSTER, SKU, run.id, "n1")
    await ledger.record_claim(CLUSTER, SKU, run.id, "n1")
    assert await CapacityClaim.filter(run_id=run.id).count() == 2


def test_shared_capacity_is_on_exactly_with_several_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not Settings().shares_capacity
    assert Settings(bus="kafka").shares_capacity
    assert not Settings(bus="kafka", shared_capacity="off").shares_capacity
    monkeypatch.setenv("AIHUB_SHARED_CAPACITY", "on")
    assert Settings().shares_capacity


# ----------------------------------------------------------------- the engine


async def foreign_running_node(user: User) -> Run:
    """Another worker's node that fills the whole cluster: its run is in the database only (never published,
    so this engine does not drive it), with a claim of the whole cluster."""
    version = await create_workflow(
        user, spec({"name": "x", "command": "true", "cluster": CLUSTER}, name="other")
    )
    run = await Run.create(
        name="other",
        version_id=version.id,
        workflow_id=version.workflow_id,
        owner=user,
        status=RunStatus.RUNNING,
    )
    await NodeRun.create(run=run, name="x", status=NodeStatus.RUNNING, attempt=1)
    await CapacityClaim.create(cluster=CLUSTER, run=run, node="x", cpu_millis=500, memory_mib=256)
    return run


@pytest.mark.parametrize("freed_by", ["release", "sweep"])
async def test_a_node_waits_while_another_worker_holds_its_cluster(
    rt: Runtime, user: User, monkeypatch: pytest.MonkeyPatch, freed_by: str
) -> None:
    """Hazard: each engine worker counted capacity only in memory, so N workers over-committed a cluster N
    times."""
    delay = 0.2
    monkeypatch.setattr(dispatch, "SHARED_RETRY_DELAY", delay)
    spy = LedgerSpy(monkeypatch)
    await VirtualCluster.create(name=CLUSTER, cpu_millis=500, memory_mib=256, capacity=1)
    other = await foreign_running_node(user)

    run = await start_run(rt, user, spec({"name": "a", "command": "true", "cluster": CLUSTER}))
    await until(lambda: len(spy.refusals()) >= 3, "the engine retried the refused node twice")
    node = await NodeRun.get(run_id=run.id, name="a")
    assert node.status is NodeStatus.WAITING and node.attempt == 0
    refusals = spy.refusals()
    assert all(b - a >= delay * 0.9 for a, b in itertools.pairwise(refusals)), refusals  # the pool rested

    if freed_by == "release":
        await ledger.release(other.id, "x")
    else:  # the other worker died after its node ended: the stale claim is swept
        await NodeRun.filter(run_id=other.id).update(status=NodeStatus.SUCCEEDED)
    done = await wait_for_run(rt, run.id)  # so each refusal gave the in-memory lease back (one SKU)
    assert done.status is RunStatus.SUCCEEDED, done.message
    await rt.engine.wait_idle()
    assert await claimed() == set()
    assert rt.engine.capacity.pools[CLUSTER].used_cpu == 0


async def test_a_run_on_a_shared_cluster_claims_and_releases_every_node(
    rt: Runtime, user: User, monkeypatch: pytest.MonkeyPatch, host_dir: Path
) -> None:
    """Every node of a virtual cluster is claimed before it starts and released when it ends (a retried
    node too: its second claim waits for the release of its first); the host's ``local`` cluster is not
    shared."""
    spy = LedgerSpy(monkeypatch)
    await VirtualCluster.create(name=CLUSTER, cpu_millis=500, memory_mib=256, capacity=2)
    flaky = 'test -f "$MARK" || { touch "$MARK"; exit 1; }'
    nodes = [
        *({"name": f"p{i}", "command": "sleep 0.1", "cluster": CLUSTER} for i in range(4)),
        {
            "name": "flaky",
            "command": flaky,
            "retries": 1,
            "env": {"MARK": str(host_dir / "mark")},
            "cluster": CLUSTER,
        },
        {
            "name": "join",
            "command": "true",
            "cluster": CLUSTER,
            "depends_on": ["p0", "p1", "p2", "p3", "flaky"],
        },
        {"name": "here", "command": "true"},
    ]
    run = await wait_for_run(rt, (await start_run(rt, user, spec(*nodes))).id)
    assert run.status is RunStatus.SUCCEEDED, run.message
    await rt.engine.wait_idle()
    shared = {"p0", "p1", "p2", "p3", "flaky", "join"}
    assert set(spy.nodes("try_claim", True)) == shared
    assert spy.nodes("try_claim", True).count("flaky") == 2
    assert sorted(spy.nodes("release")) == sorted([*shared, "flaky"])
    assert await claimed() == set()


@asynccontextmanager
async def engine(settings: Settings, bus: MemoryBus) -> AsyncIterator[scheduler.Engine]:
    artifacts, logs = build_storage(settings)
    worker = scheduler.Engine(settings, bus, build_executor(settings, artifacts, logs))
    await worker.start()
    try:
        yield worker
    finally:
        await worker.close()


async def test_a_reattached_running_node_is_claimed_again(db: Settings, host_dir: Path) -> None:
    """After a restart or a takeover a running node is counted again (unconditionally, see
    ``test_a_running_node_is_recorded_even_over_capacity``): it runs, whatever the ledger says."""
    db.ensure_dirs()
    bus = MemoryBus()
    user = await create_user("alice", "alice-password-1")
    await VirtualCluster.create(name=CLUSTER, cpu_millis=500, memory_mib=256, capacity=1)
    gate = host_dir / "gate"
    wait = gate_wait(gate)
    version = await create_workflow(user, spec({"name": "g", "command": wait, "cluster": CLUSTER}))
    async with engine(db, bus):
        run = await create_run(bus, user, version.id)
        await until(lambda: NodeRun.exists(run_id=run.id, name="g", status=NodeStatus.RUNNING), "g started")
        assert await claimed(run) == {"g"}
    await ledger.release(run.id, "g")  # lost while no engine ran (or never written: shared mode was off)
    async with engine(db, bus) as worker:
        await until(lambda: claimed(run), "the re-attached node is claimed")
        gate.touch()
        await until(lambda: Run.exists(id=run.id, status=RunStatus.SUCCEEDED), "the run succeeded")
        await worker.wait_idle()
    assert await claimed() == set()


@pytest.mark.parametrize("shared_capacity", ["auto"])
async def test_one_process_never_touches_the_ledger(
    rt: Runtime, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hazard: the embedded default (memory bus) paid a database transaction per node start."""
    spy = LedgerSpy(monkeypatch)
    await VirtualCluster.create(name=CLUSTER, cpu_millis=500, memory_mib=256, capacity=1)
    nodes = [{"name": f"n{i}", "command": "true", "cluster": CLUSTER} for i in range(2)]
    run = await wait_for_run(rt, (await start_run(rt, user, spec(*nodes))).id)
    assert run.status is RunStatus.SUCCEEDED, run.message
    await rt.engine.wait_idle()
    assert spy.calls == []
    assert await CapacityClaim.all().count() == 0
