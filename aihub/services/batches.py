"""Batched reads for per-request loaders (GraphQL DataLoaders): many rows by id, or the children of many parents,
in one query per batch, so a listing of N objects costs the same few queries as one.

Callers ask only for ids they reached through a visible object (a run's nodes, a workflow's versions);
visibility itself is answered by :func:`visible_workflow_ids`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

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


def _by_id(model: type[M]) -> Callable[[list[int]], Awaitable[Sequence[M | None]]]:
    async def load(ids: list[int]) -> Sequence[M | None]:
        rows = {row.pk: row for row in await model.filter(id__in=ids)}
        return [rows.get(i) for i in ids]

    return load


users_by_id = _by_id(User)
teams_by_id = _by_id(Team)
workflows_by_id = _by_id(Workflow)
versions_by_id = _by_id(WorkflowVersion)
categories_by_id = _by_id(Category)
modules_by_id = _by_id(Module)
builds_by_id = _by_id(ModuleBuild)


async def nodes_of_runs(run_ids: list[int]) -> list[NodeRun]:
    return await NodeRun.filter(run_id__in=run_ids).order_by("id")


async def attempts_by_node(run_ids: list[int]) -> Sequence[dict[int, list[Attempt]]]:
    """Per run: node id -> its attempts (two queries for any number of runs and nodes)."""
    run_of_node = dict(await NodeRun.filter(run_id__in=run_ids).values_list("id", "run_id"))
    result: dict[int, dict[int, list[Attempt]]] = {i: defaultdict(list) for i in run_ids}
    for row in await Attempt.filter(node_run__run_id__in=run_ids).order_by("number"):
        node_id = row.node_run_id  # type: ignore[attr-defined]
        result[run_of_node[node_id]][node_id].append(row)
    return [result[i] for i in run_ids]


async def events_by_node(run_ids: list[int]) -> Sequence[dict[str | None, list[NodeEvent]]]:
    """Per run: node name (None for run-level events) -> its events, oldest first."""
    result: dict[int, dict[str | None, list[NodeEvent]]] = {i: defaultdict(list) for i in run_ids}
    for row in await NodeEvent.filter(run_id__in=run_ids).order_by("id"):
        result[row.run_id][row.node].append(row)  # type: ignore[attr-defined]
    return [result[i] for i in run_ids]


async def builds_of_modules(module_ids: list[int]) -> list[ModuleBuild]:
    return await ModuleBuild.filter(module_id__in=module_ids).order_by("-number")


async def versions_of_workflows(workflow_ids: list[int]) -> list[WorkflowVersion]:
    return await WorkflowVersion.filter(workflow_id__in=workflow_ids).order_by("number")


async def visible_workflow_ids(user: User, ids: list[int]) -> set[int]:
    """Which of ``ids`` name workflows ``user`` may see."""
    return set(await workflows_visible_to(user).filter(id__in=ids).values_list("id", flat=True))
