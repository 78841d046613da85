"""Scalars, enums and small shared types."""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON

from aihub.db.models import ModuleStatus, ReviewStatus
from aihub.domain.status import NodeStatus, RunStatus
from aihub.services.errors import InvalidInput

__all__ = [
    "JSON",
    "ModuleStatusEnum",
    "NodeStatusEnum",
    "ReviewStatusEnum",
    "RunStatusEnum",
    "parse_id",
]

RunStatusEnum = strawberry.enum(RunStatus, name="RunStatus")
NodeStatusEnum = strawberry.enum(NodeStatus, name="NodeStatus")
ModuleStatusEnum = strawberry.enum(ModuleStatus, name="ModuleStatus")
ReviewStatusEnum = strawberry.enum(ReviewStatus, name="ReviewStatus")


def parse_id(value: strawberry.ID | str | int, field: str = "id") -> int:
    """An ``ID`` argument as the integer primary key it stands for."""
    text = str(value).strip()
    if not text.isdigit() or len(text) > 18:
        raise InvalidInput(f"invalid id {value!r}: expected a number", field=field)
    return int(text)


def optional_id(value: strawberry.ID | None, field: str) -> int | None:
    return None if value is None else parse_id(value, field)
