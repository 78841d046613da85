"""Modules, their builds and review records, as read by the catalogue (mutations live in
``aihub.graphql.modules``, next to the module services)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import strawberry

from aihub.domain.git import redact_url
from aihub.graphql.context import Info
from aihub.graphql.types.catalog import CategoryType
from aihub.graphql.types.common import JSON, ModuleStatusEnum, ReviewStatusEnum
from aihub.graphql.types.users import UserType, load_user
from aihub.services.modules import Shown, published_build, shown_modules

if TYPE_CHECKING:
    from aihub.db.models import Module, ModuleBuild, ModuleReview, User


@strawberry.type(name="ModuleBuild")
class ModuleBuildType:
    id: strawberry.ID
    number: int
    status: str
    commit_sha: str
    image: str
    entrypoint: JSON
    readme: str
    message: str
    published: bool
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: ModuleBuild) -> ModuleBuildType:
        return cls(
            id=strawberry.ID(str(row.id)),
            number=row.number,
            status=str(row.status),
            commit_sha=row.commit_sha,
            image=row.image,
            entrypoint=row.entrypoint,
            readme=row.readme,
            message=row.message,
            published=row.published,
            created_at=row.created_at,
            finished_at=row.finished_at,
        )


@strawberry.type(name="Module")
class ModuleType:
    id: strawberry.ID
    name: str
    description: str
    git_url: str
    ref: str
    dockerfile_path: str
    build_context: str
    readme_path: str
    env: JSON
    inputs: JSON
    outputs: JSON
    status: ModuleStatusEnum
    created_at: datetime
    updated_at: datetime
    module_id: strawberry.Private[int]
    owner_id: strawberry.Private[int]
    category_id: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: Module) -> ModuleType:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            description=row.description,
            git_url=redact_url(row.git_url),  # credentials in the URL are never shown
            ref=row.ref,
            dockerfile_path=row.dockerfile_path,
            build_context=row.build_context,
            readme_path=row.readme_path,
            env=row.env,
            inputs=row.inputs,
            outputs=row.outputs,
            status=row.status,
            created_at=row.created_at,
            updated_at=row.updated_at,
            **_module_keys(row),
        )

    @classmethod
    def from_shown(cls, row: Module, shown: Shown) -> ModuleType:
        """The module as one viewer sees it (``services.modules.Shown``): others than the owner see the
        published build's fields (or, reviewing a request, the build under review), not an unapproved edit."""
        if shown.owner_view:
            return cls.from_row(row)
        fields = shown.fields
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            description=fields.get("description", ""),
            git_url=redact_url(fields.get("git_url", "")),
            ref=fields.get("ref", ""),
            dockerfile_path=fields.get("dockerfile_path", ""),
            build_context=fields.get("build_context", ""),
            readme_path=fields.get("readme_path", ""),
            env=fields.get("env", {}),
            inputs=fields.get("inputs", []),
            outputs=fields.get("outputs", []),
            status=shown.status,
            created_at=row.created_at,
            updated_at=row.updated_at,
            **_module_keys(row),
        )

    @strawberry.field(
        description="the published build: what everybody but the owner sees and uses (null: none)"
    )
    async def published_build(self) -> ModuleBuildType | None:
        build = await published_build(self.module_id)
        return ModuleBuildType.from_row(build) if build else None

    @strawberry.field
    async def owner(self, info: Info) -> UserType | None:
        return await load_user(info, self.owner_id)

    @strawberry.field
    async def category(self, info: Info) -> CategoryType | None:
        row = await info.context.loaders.category.load(self.category_id)
        return CategoryType.from_row(row) if row else None

    @strawberry.field(description="newest first; others than the owner (and admins) see the published ones")
    async def builds(self, info: Info) -> list[ModuleBuildType]:
        rows = await info.context.loaders.builds_of_module.load(self.module_id)
        user = info.context.user
        if user is None or not (user.is_admin or user.id == self.owner_id):
            rows = [b for b in rows if b.published]
        return [ModuleBuildType.from_row(b) for b in rows]


@strawberry.type(name="ModuleReview")
class ModuleReviewType:
    id: strawberry.ID
    status: ReviewStatusEnum
    reason: str
    created_at: datetime
    decided_at: datetime | None
    module_id: strawberry.Private[int]
    build_id: strawberry.Private[int]
    requester_id: strawberry.Private[int]
    reviewer_id: strawberry.Private[int | None]

    @classmethod
    def from_row(cls, row: ModuleReview) -> ModuleReviewType:
        return cls(
            id=strawberry.ID(str(row.id)),
            status=row.status,
            reason=row.reason,
            created_at=row.created_at,
            decided_at=row.decided_at,
            module_id=row.module_id,  # type: ignore[attr-defined]
            build_id=row.build_id,  # type: ignore[attr-defined]
            requester_id=row.requester_id,  # type: ignore[attr-defined]
            reviewer_id=row.reviewer_id,  # type: ignore[attr-defined]
        )

    @strawberry.field
    async def module(self, info: Info) -> ModuleType | None:
        row = await info.context.loaders.module.load(self.module_id)
        if row is None:
            return None
        return (await module_types(info.context.require_user(), [row]))[0]

    @strawberry.field
    async def build(self, info: Info) -> ModuleBuildType | None:
        row = await info.context.loaders.build.load(self.build_id)
        return ModuleBuildType.from_row(row) if row else None

    @strawberry.field
    async def requester(self, info: Info) -> UserType | None:
        return await load_user(info, self.requester_id)

    @strawberry.field
    async def reviewer(self, info: Info) -> UserType | None:
        return await load_user(info, self.reviewer_id) if self.reviewer_id else None


def _module_keys(row: Module) -> dict[str, int]:
    """The ids a module's resolvers load by (the row itself stays out of the type)."""
    return {
        "module_id": row.id,
        "owner_id": row.owner_id,  # type: ignore[attr-defined]
        "category_id": row.category_id,  # type: ignore[attr-defined]
    }


async def module_types(user: User, rows: list[Module]) -> list[ModuleType]:
    """The modules as ``user`` sees them (one batch of queries for the whole list)."""
    shown = await shown_modules(user, rows)
    return [ModuleType.from_shown(row, shown[row.id]) for row in rows]
