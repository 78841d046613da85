"""Scalars, enums and small shared types."""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON

from aihub.domain.ids import parse_row_id
from aihub.domain.messages import msg
from aihub.domain.status import ModuleStatus, NodeStatus, ReviewStatus, RunStatus
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
    """An ``ID`` argument as the integer primary key it stands for (``aihub.domain.ids``: ASCII digits, 1 to
    2^63-1); anything else is ``INVALID_INPUT`` naming the argument."""
    row_id = parse_row_id(str(value))
    if row_id is None:
        raise InvalidInput(
            msg("invalid {field} {value}: expected a positive number", field=field, value=repr(value)),
            field=field,
        )
    return row_id


def optional_id(value: strawberry.ID | None, field: str) -> int | None:
    return None if value is None else parse_id(value, field)
