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


#: the largest primary key (a 64-bit signed integer on SQLite and PostgreSQL)
MAX_ID = 2**63 - 1


def parse_id(value: strawberry.ID | str | int, field: str = "id") -> int:
    """An ``ID`` argument as the integer primary key it stands for: ASCII digits only, 1 to ``MAX_ID``.

    ``str.isdigit()`` is not the test: it accepts characters ``int()`` rejects (``"²"``, ``"①"``) or reads as
    other numbers (``"１"``, ``"٣"``)."""
    text = str(value)
    if (
        not (text.isascii() and text.isdigit())
        or len(text) > len(str(MAX_ID))
        or not 1 <= int(text) <= MAX_ID
    ):
        raise InvalidInput(f"invalid {field} {value!r}: expected a positive number", field=field)
    return int(text)


def optional_id(value: strawberry.ID | None, field: str) -> int | None:
    return None if value is None else parse_id(value, field)
