"""Workflows and versions: list, read, create, version, copy, templates, sharing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import strawberry

from aihub.domain.messages import msg
from aihub.graphql.context import Info
from aihub.graphql.types.common import JSON, parse_id
from aihub.graphql.types.workflows import WorkflowPage, WorkflowType, WorkflowVersionType
from aihub.services import queries, versions, workflows
from aihub.services.access import get_workflow
from aihub.services.errors import InvalidInput, NotFound


def spec_source(value: Any) -> str | Mapping[str, Any]:
    """A ``spec`` argument: an object, or YAML/JSON text (so that errors can point at lines)."""
    if isinstance(value, str | Mapping):
        return value
    raise InvalidInput(msg("spec must be an object or the YAML/JSON text of one"), field="spec")


@strawberry.type
class WorkflowQuery:
    @strawberry.field(description="workflows the caller may see, newest first")
    async def workflows(
        self,
        info: Info,
        search: str | None = None,
        owner: str | None = None,
        first: int = queries.DEFAULT_PAGE,
        after: str | None = None,
    ) -> WorkflowPage:
        page = await queries.list_workflows(
            info.context.require_user(), search=search, owner=owner, first=first, after=after
        )
        return WorkflowPage(
            items=[WorkflowType.from_row(w) for w in page.items], next_cursor=page.next_cursor
        )

    @strawberry.field
    async def workflow(self, info: Info, id: strawberry.ID) -> WorkflowType | None:
        try:
            return WorkflowType.from_row(await get_workflow(info.context.require_user(), parse_id(id)))
        except NotFound:
            return None

    @strawberry.field
    async def workflow_version(self, info: Info, id: strawberry.ID) -> WorkflowVersionType | None:
        try:
            row = await versions.get_readable_version(info.context.require_user(), parse_id(id))
        except NotFound:
            return None
        return WorkflowVersionType.from_row(row)

    @strawberry.field(description="versions marked as templates (readable by everybody)")
    async def templates(self, info: Info) -> list[WorkflowVersionType]:
        info.context.require_user()
        return [WorkflowVersionType.from_row(v) for v in await versions.list_templates()]


@strawberry.type
class WorkflowMutation:
    @strawberry.mutation(description="a new workflow with its first version")
    async def create_workflow(
        self, info: Info, spec: JSON, name: str | None = None, description: str | None = None
    ) -> WorkflowVersionType:
        row = await workflows.create_workflow(
            info.context.require_user(),
            spec_source(spec),
            name=name,
            description=description,
        )
        return WorkflowVersionType.from_row(row)

    @strawberry.mutation
    async def create_workflow_version(
        self, info: Info, workflow_id: strawberry.ID, spec: JSON, description: str = ""
    ) -> WorkflowVersionType:
        row = await workflows.create_version(
            info.context.require_user(),
            parse_id(workflow_id, "workflowId"),
            spec_source(spec),
            description=description,
        )
        return WorkflowVersionType.from_row(row)

    @strawberry.mutation(
        description="the caller's workflow named like the spec, created or given a new version when it changed"
    )
    async def submit_workflow(self, info: Info, spec: JSON) -> WorkflowVersionType:
        row = await workflows.find_or_create_for_file(info.context.require_user(), spec_source(spec))
        return WorkflowVersionType.from_row(row)

    @strawberry.mutation
    async def copy_workflow_version(
        self, info: Info, version_id: strawberry.ID, as_new_workflow: bool = False, name: str | None = None
    ) -> WorkflowVersionType:
        row = await versions.copy_version(
            info.context.require_user(),
            parse_id(version_id, "versionId"),
            as_new_workflow=as_new_workflow,
            name=name,
        )
        return WorkflowVersionType.from_row(row)

    @strawberry.mutation
    async def create_workflow_from_template(
        self, info: Info, version_id: strawberry.ID, name: str | None = None
    ) -> WorkflowVersionType:
        row = await versions.create_from_template(
            info.context.require_user(), parse_id(version_id, "versionId"), name=name
        )
        return WorkflowVersionType.from_row(row)

    @strawberry.mutation
    async def set_version_template(
        self, info: Info, version_id: strawberry.ID, is_template: bool
    ) -> WorkflowVersionType:
        row = await versions.set_template(
            info.context.require_user(), parse_id(version_id, "versionId"), is_template
        )
        return WorkflowVersionType.from_row(row)

    @strawberry.mutation(description="share (or stop sharing) a workflow and its runs with the owner's team")
    async def set_workflow_shared(self, info: Info, workflow_id: strawberry.ID, shared: bool) -> WorkflowType:
        row = await versions.set_workflow_shared(
            info.context.require_user(), parse_id(workflow_id, "workflowId"), shared
        )
        return WorkflowType.from_row(row)
