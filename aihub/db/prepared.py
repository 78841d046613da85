"""Selects whose SQL is made once: the query builder's SQL and parameter order for a shape of query, reused.

Tortoise builds a query's SQL afresh on every call (pypika copies and string formatting): for a request that
runs one small query (``run(id) { status }``) that was a third of its cost (issue 18). A :class:`PreparedSelect`
asks the query builder once per database dialect and *shape* (e.g. "a non-admin's visible run"), with
distinct sentinel numbers as its parameters, keeps the SQL, and learns which parameter is which sentinel; later
calls only fill in the parameters and turn the rows into models the way Tortoise does (``_init_from_db``).
Queries with joins that select related models or prefetches are not supported (the builder is used for them).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Generic, NamedTuple, TypeVar

from tortoise.models import Model
from tortoise.queryset import QuerySet

M = TypeVar("M", bound=Model)

#: sentinel parameter values: large negative numbers no real row id or count takes
SENTINEL_BASE = -7_300_000_000


class _Param(NamedTuple):
    name: str | None  # a named parameter, or None for a constant of the shape
    value: object


class PreparedSelect(Generic[M]):
    """``build(**sentinels)`` returns the queryset of one shape; its integer parameters are named."""

    def __init__(self, model: type[M], build: Callable[..., QuerySet[M]]) -> None:
        self.model = model
        self.build = build
        self._prepared: dict[tuple[str, Hashable], tuple[str, list[_Param]]] = {}

    def _prepare(self, shape: Hashable, names: list[str]) -> tuple[str, list[_Param]]:
        sentinels = {name: SENTINEL_BASE - i for i, name in enumerate(names)}
        queryset = self.build(**sentinels)
        queryset._choose_db_if_not_chosen()  # type: ignore[attr-defined]
        queryset._make_query()
        if len(queryset._select_related_idx) > 1 or queryset._prefetch_map or queryset._annotations:  # type: ignore[attr-defined]
            raise ValueError("a prepared select takes plain selects only")
        sql, params = queryset.query.get_parameterized_sql()
        by_value = {v: k for k, v in sentinels.items()}
        # a parameter is a named one (its sentinel) or a constant of the shape (kept as it is)
        prepared = []
        for p in params:
            name = by_value.get(p) if type(p) is int else None
            prepared.append(_Param(name, p))
        return sql, prepared

    async def fetch(self, shape: Hashable, values: Mapping[str, int]) -> list[M]:
        """The rows of the query of ``shape`` with ``values`` for its named parameters."""
        db = self.model._meta.db
        key = (db.capabilities.dialect, shape)
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepared[key] = self._prepare(shape, sorted(values))
        sql, params = prepared
        _, rows = await db.execute_query(sql, [p.value if p.name is None else values[p.name] for p in params])
        return [self.model._init_from_db(**row) for row in rows]
