"""Runs: list with filters and cursor pagination, detail, create, stop, retry (from a node), copy."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import strawberry

from aihub.domain.messages import msg
from aihub.graphql.context import Context, Info
from aihub.graphql.types.common import JSON, RunStatusEnum, optional_id, parse_id
from aihub.graphql.types.runs import RunPage, RunType
from aihub.services import queries, runs
from aihub.services.access import get_run
from aihub.services.errors import InvalidInput, NotFound


def params_object(value: Any) -> Mapping[str, object] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInput(msg("params must be an object of name: value"), field="params")
    return value


async def run_by_id(context: Context, id: str) -> RunType | None:
    """``run(id)``: the run if the caller may see it, else None (the same answer as a missing run); also the
    precompiled answer of ``aihub.graphql.fastpath``."""
    try:
        return RunType.from_row(await get_run(context.require_user(), parse_id(id)))
    except NotFound:
        return None


@strawberry.type
class RunQuery:
    @strawberry.field(
        description="runs the caller may see, newest first; filters: status, workflow (id, or workflowSearch: a "
        "part of its name), owner's username, createdAfter <= creation time < createdBefore"
    )
    async def runs(
        self,
        info: Info,
        status: list[RunStatusEnum] | None = None,
        workflow_id: strawberry.ID | None = None,
        owner: str | None = None,
        workflow_search: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        first: int = queries.DEFAULT_PAGE,
        after: str | None = None,
    ) -> RunPage:
        page = await queries.list_runs(
            info.context.require_user(),
            statuses=status or (),
            workflow_id=optional_id(workflow_id, "workflowId"),
            owner=owner,
            workflow_search=workflow_search or None,
            created_after=created_after,
            created_before=created_before,
            first=first,
            after=after,
        )
        return RunPage(items=[RunType.from_row(r) for r in page.items], next_cursor=page.next_cursor)

    @strawberry.field
    async def run(self, info: Info, id: strawberry.ID) -> RunType | None:
        return await run_by_id(info.context, id)


@strawberry.type
class RunMutation:
    @strawberry.mutation
    async def create_run(
        self,
        info: Info,
        version_id: strawberry.ID,
        name: str | None = None,
        params: JSON | None = None,
        use_cache: bool = True,
    ) -> RunType:
        row = await runs.create_run(
            info.context.runtime.bus,
            info.context.require_user(),
            parse_id(version_id, "versionId"),
            name=name,
            params=params_object(params),
            use_cache=use_cache,
        )
        return RunType.from_row(row)

    @strawberry.mutation
    async def stop_run(self, info: Info, id: strawberry.ID) -> RunType:
        row = await runs.stop_run(info.context.runtime.bus, info.context.require_user(), parse_id(id))
        return RunType.from_row(row)

    @strawberry.mutation(
        description="re-run what did not succeed; with fromNode also that node and its descendants"
    )
    async def retry_run(self, info: Info, id: strawberry.ID, from_node: str | None = None) -> RunType:
        row = await runs.retry_run(
            info.context.runtime.bus, info.context.require_user(), parse_id(id), from_node=from_node
        )
        return RunType.from_row(row)

    @strawberry.mutation(
        description="a new run of the same version; params given here override the copied ones"
    )
    async def copy_run(
        self, info: Info, id: strawberry.ID, name: str | None = None, params: JSON | None = None
    ) -> RunType:
        row = await runs.copy_run(
            info.context.runtime.bus,
            info.context.require_user(),
            parse_id(id),
            name=name,
            params=params_object(params),
        )
        return RunType.from_row(row)
