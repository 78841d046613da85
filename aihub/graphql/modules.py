"""Module mutations and the module queries beyond the catalogue: register, edit, rebuild, ask for publishing,
review; a build, its log, the node palette. Thin adapters over ``aihub.services.modules`` / ``reviews``.

Picked up by ``aihub.graphql.schema`` as an optional area (``ModuleQuery``, ``ModuleMutation``).
"""

from __future__ import annotations

from typing import Any

import strawberry

from aihub.graphql.context import Info
from aihub.graphql.types.common import JSON, parse_id
from aihub.graphql.types.modules import ModuleBuildType, ModuleReviewType, ModuleType
from aihub.services import modules, reviews
from aihub.services.errors import NotFound


@strawberry.input
class ModuleInputDeclInput:
    name: str
    description: str = ""


@strawberry.input
class ModuleOutputDeclInput:
    name: str
    path: str = strawberry.field(description="absolute path inside the module's container")
    type: str = strawberry.field(description="text | path")
    description: str = ""


@strawberry.input
class CreateModuleInput:
    category: str = strawberry.field(description="name of a category (admin-managed)")
    name: str = strawberry.field(description="^[a-z0-9-]+$, unique")
    git_url: str
    ref: str = strawberry.field(default="main", description="branch or tag")
    dockerfile_path: str = "Dockerfile"
    build_context: str = "."
    readme_path: str = "README.md"
    description: str = ""
    env: JSON | None = strawberry.field(default=None, description="default env: {NAME: value}")
    inputs: list[ModuleInputDeclInput] | None = None
    outputs: list[ModuleOutputDeclInput] | None = None


@strawberry.input
class UpdateModuleInput:
    """Fields left out (null) keep their value; saving starts a new build."""

    category: str | None = None
    git_url: str | None = None
    ref: str | None = None
    dockerfile_path: str | None = None
    build_context: str | None = None
    readme_path: str | None = None
    description: str | None = None
    env: JSON | None = None
    inputs: list[ModuleInputDeclInput] | None = None
    outputs: list[ModuleOutputDeclInput] | None = None


def _fields(data: CreateModuleInput | UpdateModuleInput) -> dict[str, Any]:
    values = {k: v for k, v in vars(data).items() if v is not None}
    for key in ("inputs", "outputs"):
        if key in values:
            values[key] = [vars(item) for item in values[key]]
    return values


@strawberry.type(name="BuildLog")
class BuildLogType:
    text: str
    next_offset: int = strawberry.field(description="pass it as offset to read what follows")


@strawberry.type(name="PaletteEntry")
class PaletteEntryType:
    group: str = strawberry.field(description='"mine", or the category of a published module')
    module: ModuleType
    build: ModuleBuildType = strawberry.field(description="the build a version saved now would pin")


@strawberry.type
class ModuleQuery:
    @strawberry.field
    async def module_build(self, info: Info, id: strawberry.ID) -> ModuleBuildType | None:
        try:
            row = await modules.get_build(info.context.require_user(), parse_id(id))
        except NotFound:
            return None
        return ModuleBuildType.from_row(row)

    @strawberry.field(description="a build's log from byte offset (up to 1 MiB per call)")
    async def module_build_log(self, info: Info, build_id: strawberry.ID, offset: int = 0) -> BuildLogType:
        runtime = info.context.runtime
        text = await modules.read_build_log(
            runtime.builds, info.context.require_user(), parse_id(build_id, "buildId"), offset=offset
        )
        return BuildLogType(text=text, next_offset=max(offset, 0) + len(text.encode()))

    @strawberry.field(description="the README of the module's shown build, as sanitized HTML")
    async def module_readme_html(self, info: Info, id: strawberry.ID) -> str:
        user = info.context.require_user()
        view = await modules.view_module(user, await modules.get_module(user, parse_id(id)))
        return view.readme_html

    @strawberry.field(description='modules the caller may put in a workflow: "mine" first, then by category')
    async def module_palette(self, info: Info) -> list[PaletteEntryType]:
        entries = await modules.module_palette(info.context.require_user())
        return [
            PaletteEntryType(
                group=e.group, module=ModuleType.from_row(e.module), build=ModuleBuildType.from_row(e.build)
            )
            for e in entries
        ]


@strawberry.type
class ModuleMutation:
    @strawberry.mutation(description="register a module and start its first build")
    async def create_module(self, info: Info, input: CreateModuleInput) -> ModuleType:
        user = info.context.require_user()
        row = await modules.create_module(info.context.runtime.builds, user, **_fields(input))
        return ModuleType.from_row(row)

    @strawberry.mutation(
        description="edit a module: starts a new build; workflows keep the build they pinned"
    )
    async def update_module(self, info: Info, id: strawberry.ID, input: UpdateModuleInput) -> ModuleType:
        user = info.context.require_user()
        row = await modules.update_module(info.context.runtime.builds, user, parse_id(id), **_fields(input))
        return ModuleType.from_row(row)

    @strawberry.mutation(description="build the module again as it is (e.g. its branch moved)")
    async def rebuild_module(self, info: Info, id: strawberry.ID) -> ModuleBuildType:
        user = info.context.require_user()
        return ModuleBuildType.from_row(
            await modules.rebuild_module(info.context.runtime.builds, user, parse_id(id))
        )

    @strawberry.mutation(description="ask for the module's newest build to be published")
    async def request_module_publish(self, info: Info, id: strawberry.ID) -> ModuleReviewType:
        return ModuleReviewType.from_row(
            await reviews.request_publish(info.context.require_user(), parse_id(id))
        )

    @strawberry.mutation(description="approve (publish) or reject (with a reason) a pending request")
    async def review_module(
        self, info: Info, review_id: strawberry.ID, approve: bool, reason: str = ""
    ) -> ModuleReviewType:
        row = await reviews.review_module(
            info.context.require_user(), parse_id(review_id, "reviewId"), approve=approve, reason=reason
        )
        return ModuleReviewType.from_row(row)
