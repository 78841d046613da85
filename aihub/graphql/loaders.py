"""DataLoaders: each batches the lookups of one operation into one query, whatever the size of the result.

A run's nodes, their attempts and their events are loaded per run (one query each for any number of nodes);
rows referenced by id (users, workflows, versions, teams, categories) are loaded by id in one ``IN`` query.

Every field that asks for the same key awaits the same cached future. GraphQL execution cancels the sibling
fields of a field that failed; were that cancellation to reach the shared future, every other field awaiting it
would get a ``CancelledError`` that escapes error handling (issue 22). ``SharedLoader`` hands each caller a
shield of the future instead, so cancelling one caller cancels that caller only.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader
from tortoise.models import Model

from aihub.db.models import (
    Attempt,
    Category,
    Module,
    ModuleBuild,
    NodeEvent,
    NodeRun,
    Team,
    User,
    Workflow,
    WorkflowVersion,
)
from aihub.services.access import workflows_visible_to

M = TypeVar("M", bound=Model)
K = TypeVar("K")
T = TypeVar("T")


class SharedLoader(DataLoader[K, T]):
    """A DataLoader whose callers each get a shield of the shared future (see the module docstring)."""

    def load(self, key: K) -> Awaitable[T]:
        return asyncio.shield(super().load(key))


def by_id(model: type[M]) -> DataLoader[int, M | None]:
    async def load(ids: list[int]) -> Sequence[M | None]:
        rows = {row.pk: row for row in await model.filter(id__in=ids)}
        return [rows.get(i) for i in ids]

    return SharedLoader(load_fn=load)


def grouped(fetch: Callable[[list[int]], Awaitable[list[Any]]], key: str) -> DataLoader[int, list[Any]]:
    """Rows grouped by one of their columns (e.g. a run's nodes by ``run_id``), in fetch order."""

    async def load(ids: list[int]) -> Sequence[list[Any]]:
        groups: dict[int, list[Any]] = defaultdict(list)
        for row in await fetch(ids):
            groups[getattr(row, key)].append(row)
        return [groups.get(i, []) for i in ids]

    return SharedLoader(load_fn=load)


async def _nodes(run_ids: list[int]) -> list[NodeRun]:
    return await NodeRun.filter(run_id__in=run_ids).order_by("id")


async def _attempts_by_node(run_ids: list[int]) -> Sequence[dict[int, list[Attempt]]]:
    """Per run: node id -> its attempts (two queries for any number of runs and nodes)."""
    run_of_node = dict(await NodeRun.filter(run_id__in=run_ids).values_list("id", "run_id"))
    result: dict[int, dict[int, list[Attempt]]] = {i: defaultdict(list) for i in run_ids}
    for row in await Attempt.filter(node_run__run_id__in=run_ids).order_by("number"):
        node_id = row.node_run_id  # type: ignore[attr-defined]
        result[run_of_node[node_id]][node_id].append(row)
    return [result[i] for i in run_ids]


async def _events_by_node(run_ids: list[int]) -> Sequence[dict[str | None, list[NodeEvent]]]:
    """Per run: node name (None for run-level events) -> its events, oldest first."""
    result: dict[int, dict[str | None, list[NodeEvent]]] = {i: defaultdict(list) for i in run_ids}
    for row in await NodeEvent.filter(run_id__in=run_ids).order_by("id"):
        result[row.run_id][row.node].append(row)  # type: ignore[attr-defined]
    return [result[i] for i in run_ids]


async def _builds(module_ids: list[int]) -> list[ModuleBuild]:
    return await ModuleBuild.filter(module_id__in=module_ids).order_by("-number")


async def _versions(workflow_ids: list[int]) -> list[WorkflowVersion]:
    return await WorkflowVersion.filter(workflow_id__in=workflow_ids).order_by("number")


def visible_workflows(user: User | None) -> DataLoader[int, bool]:
    async def load(ids: list[int]) -> Sequence[bool]:
        if user is None:
            return [False] * len(ids)
        visible = set(await workflows_visible_to(user).filter(id__in=ids).values_list("id", flat=True))
        return [i in visible for i in ids]

    return SharedLoader(load_fn=load)


class Loaders:
    """One set per operation; ``user`` is the caller, for loaders that answer visibility questions."""

    def __init__(self, user: User | None = None) -> None:
        self.user = by_id(User)
        self.team = by_id(Team)
        self.workflow = by_id(Workflow)
        self.version = by_id(WorkflowVersion)
        self.category = by_id(Category)
        self.module = by_id(Module)
        self.build = by_id(ModuleBuild)
        self.nodes_of_run = grouped(_nodes, "run_id")
        self.attempts_by_node = SharedLoader(load_fn=_attempts_by_node)
        self.events_by_node = SharedLoader(load_fn=_events_by_node)
        self.builds_of_module = grouped(_builds, "module_id")
        self.versions_of_workflow = grouped(_versions, "workflow_id")
        self.workflow_visible = visible_workflows(user)
