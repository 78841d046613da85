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
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from strawberry.dataloader import DataLoader
from tortoise.models import Model

from aihub.services import batches

if TYPE_CHECKING:
    from aihub.db.models import User

M = TypeVar("M", bound=Model)
K = TypeVar("K")
T = TypeVar("T")


class SharedLoader(DataLoader[K, T]):
    """A DataLoader whose callers each get a shield of the shared future (see the module docstring)."""

    def load(self, key: K) -> Awaitable[T]:
        return asyncio.shield(super().load(key))


def by_id(fetch: Callable[[list[int]], Awaitable[Sequence[M | None]]]) -> DataLoader[int, M | None]:
    return SharedLoader(load_fn=fetch)


def grouped(fetch: Callable[[list[int]], Awaitable[list[Any]]], key: str) -> DataLoader[int, list[Any]]:
    """Rows grouped by one of their columns (e.g. a run's nodes by ``run_id``), in fetch order."""

    async def load(ids: list[int]) -> Sequence[list[Any]]:
        groups: dict[int, list[Any]] = defaultdict(list)
        for row in await fetch(ids):
            groups[getattr(row, key)].append(row)
        return [groups.get(i, []) for i in ids]

    return SharedLoader(load_fn=load)


def visible_workflows(user: User | None) -> DataLoader[int, bool]:
    async def load(ids: list[int]) -> Sequence[bool]:
        if user is None:
            return [False] * len(ids)
        visible = await batches.visible_workflow_ids(user, ids)
        return [i in visible for i in ids]

    return SharedLoader(load_fn=load)


class Loaders:
    """One set per operation; ``user`` is the caller, for loaders that answer visibility questions. Each loader
    is made when first used: most operations use one or two of them (a small query used to spend a tenth of its
    time making all thirteen, twice: issue 18)."""

    def __init__(self, user: User | None = None) -> None:
        self._user = user

    @cached_property
    def user(self) -> DataLoader[int, Any]:
        return by_id(batches.users_by_id)

    @cached_property
    def team(self) -> DataLoader[int, Any]:
        return by_id(batches.teams_by_id)

    @cached_property
    def workflow(self) -> DataLoader[int, Any]:
        return by_id(batches.workflows_by_id)

    @cached_property
    def version(self) -> DataLoader[int, Any]:
        return by_id(batches.versions_by_id)

    @cached_property
    def category(self) -> DataLoader[int, Any]:
        return by_id(batches.categories_by_id)

    @cached_property
    def module(self) -> DataLoader[int, Any]:
        return by_id(batches.modules_by_id)

    @cached_property
    def build(self) -> DataLoader[int, Any]:
        return by_id(batches.builds_by_id)

    @cached_property
    def nodes_of_run(self) -> DataLoader[int, Any]:
        return grouped(batches.nodes_of_runs, "run_id")

    @cached_property
    def attempts_by_node(self) -> DataLoader[int, Any]:
        return SharedLoader(load_fn=batches.attempts_by_node)

    @cached_property
    def events_by_node(self) -> DataLoader[int, Any]:
        return SharedLoader(load_fn=batches.events_by_node)

    @cached_property
    def builds_of_module(self) -> DataLoader[int, Any]:
        return grouped(batches.builds_of_modules, "module_id")

    @cached_property
    def versions_of_workflow(self) -> DataLoader[int, Any]:
        return grouped(batches.versions_of_workflows, "workflow_id")

    @cached_property
    def workflow_visible(self) -> DataLoader[int, Any]:
        return visible_workflows(self._user)
