"""What admins define for spec authors: virtual clusters, data storages, module categories."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import strawberry

from aihub.graphql.types.common import JSON

if TYPE_CHECKING:
    from aihub.db.models import Category, DataStorage, VirtualCluster


@strawberry.type(name="VirtualCluster")
class VirtualClusterType:
    id: strawberry.ID
    name: str
    description: str
    gpu: int
    gpu_type: str
    cpu_millis: int
    memory_mib: int
    capacity: int = strawberry.field(description="how many SKUs may run at once")
    node_selector: JSON
    created_at: datetime

    @classmethod
    def from_row(cls, row: VirtualCluster) -> VirtualClusterType:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            description=row.description,
            gpu=row.gpu,
            gpu_type=row.gpu_type,
            cpu_millis=row.cpu_millis,
            memory_mib=row.memory_mib,
            capacity=row.capacity,
            node_selector=row.node_selector,
            created_at=row.created_at,
        )


@strawberry.type(name="DataStorage")
class DataStorageType:
    id: strawberry.ID
    name: str
    description: str
    path: str = strawberry.field(description="where nodes see it")
    host_path: str
    volume: JSON
    read_only: bool
    created_at: datetime

    @classmethod
    def from_row(cls, row: DataStorage) -> DataStorageType:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            description=row.description,
            path=row.path,
            host_path=row.host_path,
            volume=row.volume,
            read_only=row.read_only,
            created_at=row.created_at,
        )


@strawberry.type(name="Category")
class CategoryType:
    id: strawberry.ID
    name: str
    description: str

    @classmethod
    def from_row(cls, row: Category) -> CategoryType:
        return cls(id=strawberry.ID(str(row.id)), name=row.name, description=row.description)
