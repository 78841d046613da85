"""Administration: users and teams (admin), virtual clusters, data storages, categories (read by all)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import strawberry

from aihub.graphql.context import Info
from aihub.graphql.types.catalog import CategoryType, DataStorageType, VirtualClusterType
from aihub.graphql.types.common import JSON, optional_id, parse_id
from aihub.graphql.types.users import TeamType, UserType
from aihub.services import admin


def _values(data: Any) -> dict[str, Any]:
    return {k: v for k, v in asdict(data).items() if v is not None}


@strawberry.input
class CreateUserInput:
    username: str
    password: str
    display_name: str = ""
    is_admin: bool = False
    team_id: strawberry.ID | None = None
    is_team_leader: bool = False


@strawberry.input
class UpdateUserInput:
    display_name: str | None = None
    password: str | None = None
    is_admin: bool | None = None
    is_active: bool | None = None
    team_id: strawberry.ID | None = None
    clear_team: bool = False
    is_team_leader: bool | None = None


@strawberry.input
class VirtualClusterInput:
    name: str | None = None
    description: str | None = None
    gpu: int | None = None
    gpu_type: str | None = None
    cpu_millis: int | None = None
    memory_mib: int | None = None
    capacity: int | None = None
    node_selector: JSON | None = None


@strawberry.input
class DataStorageInput:
    name: str | None = None
    description: str | None = None
    path: str | None = None
    host_path: str | None = None
    volume: JSON | None = None
    read_only: bool | None = None


@strawberry.type
class AdminQuery:
    @strawberry.field(description="admins: every user; others: themselves and their team")
    async def users(self, info: Info) -> list[UserType]:
        return [UserType.from_row(u) for u in await admin.list_users(info.context.require_user())]

    @strawberry.field
    async def teams(self, info: Info) -> list[TeamType]:
        info.context.require_user()
        return [TeamType.from_row(t) for t in await admin.list_teams()]

    @strawberry.field
    async def virtual_clusters(self, info: Info) -> list[VirtualClusterType]:
        info.context.require_user()
        return [VirtualClusterType.from_row(c) for c in await admin.list_clusters()]

    @strawberry.field
    async def data_storages(self, info: Info) -> list[DataStorageType]:
        info.context.require_user()
        return [DataStorageType.from_row(s) for s in await admin.list_storages()]

    @strawberry.field
    async def categories(self, info: Info) -> list[CategoryType]:
        info.context.require_user()
        return [CategoryType.from_row(c) for c in await admin.list_categories()]


@strawberry.type
class AdminMutation:
    @strawberry.mutation
    async def create_user(self, info: Info, input: CreateUserInput) -> UserType:
        values = _values(input)
        values["team_id"] = optional_id(input.team_id, "teamId")
        return UserType.from_row(await admin.create_user(info.context.require_user(), **values))

    @strawberry.mutation
    async def update_user(self, info: Info, id: strawberry.ID, input: UpdateUserInput) -> UserType:
        values = _values(input)
        values["team_id"] = optional_id(input.team_id, "teamId")
        return UserType.from_row(await admin.update_user(info.context.require_user(), parse_id(id), **values))

    @strawberry.mutation
    async def create_team(self, info: Info, name: str, peer_review: bool = False) -> TeamType:
        row = await admin.create_team(info.context.require_user(), name=name, peer_review=peer_review)
        return TeamType.from_row(row)

    @strawberry.mutation
    async def update_team(
        self, info: Info, id: strawberry.ID, name: str | None = None, peer_review: bool | None = None
    ) -> TeamType:
        row = await admin.update_team(
            info.context.require_user(), parse_id(id), name=name, peer_review=peer_review
        )
        return TeamType.from_row(row)

    @strawberry.mutation
    async def delete_team(self, info: Info, id: strawberry.ID) -> bool:
        await admin.delete_team(info.context.require_user(), parse_id(id))
        return True

    @strawberry.mutation
    async def create_virtual_cluster(self, info: Info, input: VirtualClusterInput) -> VirtualClusterType:
        values = _values(input)
        row = await admin.create_cluster(info.context.require_user(), name=values.pop("name", ""), **values)
        return VirtualClusterType.from_row(row)

    @strawberry.mutation
    async def update_virtual_cluster(
        self, info: Info, id: strawberry.ID, input: VirtualClusterInput
    ) -> VirtualClusterType:
        values = _values(input)
        values.pop("name", None)  # the name is what specs refer to: it does not change
        row = await admin.update_cluster(info.context.require_user(), parse_id(id), **values)
        return VirtualClusterType.from_row(row)

    @strawberry.mutation
    async def delete_virtual_cluster(self, info: Info, id: strawberry.ID) -> bool:
        await admin.delete_cluster(info.context.require_user(), parse_id(id))
        return True

    @strawberry.mutation
    async def create_data_storage(self, info: Info, input: DataStorageInput) -> DataStorageType:
        values = _values(input)
        row = await admin.create_storage(
            info.context.require_user(), name=values.pop("name", ""), path=values.pop("path", ""), **values
        )
        return DataStorageType.from_row(row)

    @strawberry.mutation
    async def update_data_storage(
        self, info: Info, id: strawberry.ID, input: DataStorageInput
    ) -> DataStorageType:
        values = _values(input)
        values.pop("name", None)
        row = await admin.update_storage(info.context.require_user(), parse_id(id), **values)
        return DataStorageType.from_row(row)

    @strawberry.mutation
    async def delete_data_storage(self, info: Info, id: strawberry.ID) -> bool:
        await admin.delete_storage(info.context.require_user(), parse_id(id))
        return True

    @strawberry.mutation
    async def create_category(self, info: Info, name: str, description: str = "") -> CategoryType:
        row = await admin.create_category(info.context.require_user(), name=name, description=description)
        return CategoryType.from_row(row)

    @strawberry.mutation
    async def update_category(
        self, info: Info, id: strawberry.ID, name: str | None = None, description: str | None = None
    ) -> CategoryType:
        row = await admin.update_category(
            info.context.require_user(), parse_id(id), name=name, description=description
        )
        return CategoryType.from_row(row)

    @strawberry.mutation
    async def delete_category(self, info: Info, id: strawberry.ID) -> bool:
        await admin.delete_category(info.context.require_user(), parse_id(id))
        return True
