"""What the engine knows about one active run (``RunState``), and how it is rebuilt from the database.

Level-triggered: ``load_run_state`` rebuilds the whole state from the rows, so loading again after a restart
gives the same state; the only things kept in memory alone are the run's queue and what runs now.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aihub.db.models import Attempt, DataStorage, ModuleBuild, NodeRun, Run, WorkflowVersion
from aihub.domain import dag
from aihub.domain.compact import compact_spec, shared_empty
from aihub.domain.handover import HANDOVER
from aihub.domain.spec import WorkflowSpec, parse_spec
from aihub.engine import policies
from aihub.engine.capacity import Pool
from aihub.engine.executors.base import Handle, Resources


@dataclass
class Running:
    lease: Resources
    pool: Pool
    handle: Handle | None = None
    attempt: Attempt | None = None
    #: the lease went back to the pool already (``Dispatcher.free``): the attempt ended, its end is being written
    freed: bool = False


@dataclass
class RunState:
    run: Run
    spec: WorkflowSpec
    nodes: dict[str, NodeRun]
    parents: dict[str, list[str]]
    children: dict[str, list[str]]
    blocked: dict[str, int]
    builds: dict[str, ModuleBuild]
    storages: dict[str, DataStorage]
    token: str = ""
    running: dict[str, Running] = field(default_factory=dict)
    queued: set[str] = field(default_factory=set)
    #: when each queued node was queued (``time.monotonic``), for the queue-wait histogram
    queued_at: dict[str, float] = field(default_factory=dict)
    #: when the engine saw the last parent of each ready node succeed (``time.monotonic``): hand-off latency
    ready_since: dict[str, float] = field(default_factory=dict)
    #: WAITING nodes whose parents have all succeeded (candidates to queue); kept incrementally so a
    #: hand-off costs O(children), not O(nodes)
    ready: dict[str, None] = field(default_factory=dict)
    failed_node: str | None = None
    stopping: bool = False
    finished: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: the timers that write nodes' held starts (``Attempts.record_start``)
    start_writes: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def busy(self) -> bool:
        return bool(self.running or self.queued)

    def unblock_children(self, name: str) -> None:
        """``name`` gave its outputs: each child has one unfinished parent less, and is ready at none."""
        for child in self.children[name]:
            self.blocked[child] -= 1
            if self.blocked[child] == 0:
                self.ready[child] = None
                self.ready_since[child] = time.monotonic()

    def fail_fast(self, name: str) -> None:
        """A node failed for good: nothing new starts; running nodes finish, then the run fails."""
        self.failed_node = self.failed_node or name
        self.queued.clear()
        self.queued_at.clear()


async def load_run_state(run_id: int) -> RunState | None:
    """The state of an active run from its rows (None: gone, or finished)."""
    run = await Run.get_or_none(id=run_id)
    if run is None or run.status.is_terminal:
        return None
    names: dict[str, str] = {}  # one object per name, for the spec, the rows and the maps below
    spec, pinned = await _spec_and_pins(run)
    spec = compact_spec(spec, names)
    nodes = {n.name: n for n in _compact_rows(await NodeRun.filter(run_id=run_id), names, run.id)}
    parents = {name: shared_empty([names.get(p, p) for p in ps]) for name, ps in spec.parents().items()}
    children: dict[str, list[str]] = {name: [] for name in parents}
    for name, ps in parents.items():
        for p in ps:
            children[p].append(name)
    children = {name: shared_empty(cs) for name, cs in children.items()}
    statuses = {n: r.status for n, r in nodes.items()}
    blocked = policies.unfinished_parents(parents, statuses)
    return RunState(
        ready=dict.fromkeys(policies.ready_nodes(dag.topological_order(parents), blocked, statuses)),
        run=run,
        spec=spec,
        nodes=nodes,
        parents=parents,
        children=children,
        blocked=blocked,
        builds=await _pinned_builds(pinned),
        storages=await _storages(spec),
        failed_node=policies.first_failed(statuses),
    )


async def _spec_and_pins(run: Run) -> tuple[WorkflowSpec, dict[str, Any] | None]:
    """The run's parsed spec (``create_run``'s own parse when it was made in this process) and its version's
    pinned builds."""
    version = WorkflowVersion.filter(id=run.version_id).first()
    spec = HANDOVER.take((run.id, run.version_id, run.created_at))  # type: ignore[attr-defined]
    if spec is not None:
        return spec, await version.values_list("pinned_builds", flat=True)  # type: ignore[attr-defined]
    # the version's JSON is parsed and dropped before the nodes are read: kept on ``run`` it cost ~0.4 KiB a
    # node for the run's life, and alive beside the node rows it raised the peak by as much
    raw_spec, pinned = await version.values_list("spec", "pinned_builds")  # type: ignore[attr-defined]
    return parse_spec(raw_spec), pinned


def _compact_rows(rows: list[NodeRun], names: dict[str, str], run_id: int) -> list[NodeRun]:
    """The rows, each with the spec's object for its name and the run's for its run id, and the shared empty
    dict for empty ``inputs`` and ``outputs`` (the engine replaces them, never changes them: see
    :mod:`aihub.domain.compact`)."""
    for row in rows:
        row.name = names.setdefault(row.name, row.name)
        row.run_id = run_id  # type: ignore[attr-defined]
        row.inputs = shared_empty(row.inputs)
        row.outputs = shared_empty(row.outputs)
    return rows


async def _pinned_builds(pinned: dict[str, Any] | None) -> dict[str, ModuleBuild]:
    """The module build each module node of the run's version is pinned to (``pinned``: node -> build id)."""
    pins = {k: int(v) for k, v in (pinned or {}).items()}
    if not pins:
        return {}
    builds = {b.id: b for b in await ModuleBuild.filter(id__in=list(pins.values()))}
    return {node: builds[bid] for node, bid in pins.items() if bid in builds}


async def _storages(spec: WorkflowSpec) -> dict[str, DataStorage]:
    wanted = {s for n in spec.nodes for s in n.storages}
    return {d.name: d for d in await DataStorage.filter(name__in=list(wanted))} if wanted else {}
