"""Workflows and their immutable versions."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import strawberry

from aihub.domain.spec import parse_spec
from aihub.graphql.context import Info
from aihub.graphql.types.common import JSON
from aihub.graphql.types.users import UserType, load_user

if TYPE_CHECKING:
    from aihub.db.models import Workflow, WorkflowVersion


@strawberry.type(name="Workflow")
class WorkflowType:
    id: strawberry.ID
    name: str
    description: str
    shared_with_team: bool
    created_at: datetime
    updated_at: datetime
    owner_id: strawberry.Private[int]
    #: False when reached through a template version of a workflow the caller cannot see
    visible: strawberry.Private[bool]

    @classmethod
    def from_row(cls, row: Workflow, *, visible: bool = True) -> WorkflowType:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            description=row.description,
            shared_with_team=row.shared_with_team,
            owner_id=row.owner_id,  # type: ignore[attr-defined]
            created_at=row.created_at,
            updated_at=row.updated_at,
            visible=visible,
        )

    @strawberry.field
    async def owner(self, info: Info) -> UserType | None:
        return await load_user(info, self.owner_id)

    @strawberry.field
    async def versions(self, info: Info) -> list[WorkflowVersionType]:
        rows = await info.context.loaders.versions_of_workflow.load(int(self.id))
        return [WorkflowVersionType.from_row(v) for v in rows if self.visible or v.is_template]

    @strawberry.field
    async def latest_version(self, info: Info) -> WorkflowVersionType | None:
        versions = await self.versions(info)
        return versions[-1] if versions else None


@strawberry.type(name="WorkflowVersion")
class WorkflowVersionType:
    id: strawberry.ID
    number: int
    spec: JSON
    description: str
    is_template: bool
    created_at: datetime
    workflow_id: strawberry.Private[int]
    created_by_id: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: WorkflowVersion) -> WorkflowVersionType:
        return cls(
            id=strawberry.ID(str(row.id)),
            number=row.number,
            spec=row.spec,
            description=row.description,
            is_template=row.is_template,
            created_at=row.created_at,
            workflow_id=row.workflow_id,  # type: ignore[attr-defined]
            created_by_id=row.created_by_id,  # type: ignore[attr-defined]
        )

    @strawberry.field
    async def workflow(self, info: Info) -> WorkflowType:
        loaders = info.context.loaders
        row = await loaders.workflow.load(self.workflow_id)
        assert row is not None  # a version never outlives its workflow
        return WorkflowType.from_row(row, visible=await loaders.workflow_visible.load(row.id))

    @strawberry.field
    async def created_by(self, info: Info) -> UserType | None:
        return await load_user(info, self.created_by_id)

    @strawberry.field(description="the spec as YAML (export)")
    def yaml(self) -> str:
        return parse_spec(self.spec).to_yaml()  # type: ignore[arg-type]


@strawberry.type(name="WorkflowPage")
class WorkflowPage:
    items: list[WorkflowType]
    next_cursor: str | None
