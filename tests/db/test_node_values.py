"""``aihub.db.node_writes.converter``: its fast path gives exactly what the field's own ``to_db_value`` gives,
and raises where it raises, for the values a status writer has and for the odd ones."""

from __future__ import annotations

import datetime
import enum
import warnings
from typing import Any

import pytest

from aihub.db.models import Attempt, NodeEvent, NodeRun
from aihub.db.node_writes import EVENT_FIELDS, NODE_FIELDS, converter, statements
from aihub.domain.status import NodeStatus
from aihub.settings import Settings


class Other(enum.Enum):
    RUNNING = "RUNNING"


AWARE = datetime.datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=datetime.UTC)
VALUES: list[Any] = [
    None,
    0,
    -3,
    7,
    2**40,
    True,
    1.5,
    "7",
    "",
    "x",
    "é" * 16,
    "y" * 17,
    "z" * 64,
    "z" * 65,
    b"{}",
    "{}",
    "[1,2]",
    {},
    {"a": [1, "b", None]},
    [],
    [{"x": 1}],
    NodeStatus.RUNNING,
    NodeStatus.SUCCEEDED,
    "RUNNING",
    "NOT_A_STATUS",
    Other.RUNNING,
    AWARE,
    AWARE.astimezone(datetime.timezone(datetime.timedelta(hours=8))),
    datetime.datetime(2026, 1, 2, 3, 4, 5),  # naive: Tortoise warns and makes it aware
    datetime.date(2026, 1, 2),
]


def _outcome(convert: Any, value: Any, instance: Any) -> tuple[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return "value", convert(value, instance)
        except Exception as exc:  # the same kind of error is the same behaviour
            return "error", type(exc)


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (NodeRun, NODE_FIELDS),
        (Attempt, None),  # what an attempt's statements write
        (NodeEvent, EVENT_FIELDS[:-1]),
    ],
)
async def test_fast_conversion_is_the_fields_own(db: Settings, model: Any, fields: Any) -> None:
    fields = fields or statements("sqlite").attempt_fields
    instance = model()
    checked = 0
    for name in fields:
        field = model._meta.fields_map[name]
        fast = converter(field)
        for value in VALUES:
            for target in (instance, model):
                expected = _outcome(field.to_db_value, value, target)
                got = _outcome(fast, value, target)
                assert got == expected, (model.__name__, name, value)
                assert type(got[1]) is type(expected[1]), (model.__name__, name, value)
                checked += 1
    assert checked > 100
