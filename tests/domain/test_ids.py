"""Ids in URLs, GraphQL arguments and cursors (``aihub.domain.ids``): ASCII digits within 64 bits, or nothing."""

from __future__ import annotations

import pytest

from aihub.domain.ids import MAX_ROW_ID, in_row_id_range, parse_count, parse_row_id


@pytest.mark.parametrize(
    ("text", "expected"), [("1", 1), ("42", 42), ("007", 7), (str(MAX_ROW_ID), MAX_ROW_ID)]
)
def test_ids(text: str, expected: int) -> None:
    assert parse_row_id(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "-1",
        "+1",
        " 1",
        "1 ",
        "1.0",
        "1e3",
        "0x1",
        "²",
        "①",
        "１",
        "٣",
        "1²",
        str(MAX_ROW_ID + 1),
        "9" * 40,
        "0" * 25 + "1",
    ],
)
def test_not_ids(text: str) -> None:
    """Hazard: ``str.isdigit()`` accepts ``"²"`` and ``"①"`` (``int()`` does not) and reads ``"１"``/``"٣"``."""
    assert parse_row_id(text) is None


def test_counts_include_zero_and_stop_at_64_bits() -> None:
    assert parse_count("0") == 0 and parse_count(str(MAX_ROW_ID)) == MAX_ROW_ID
    assert parse_count(str(MAX_ROW_ID + 1)) is None and parse_count("²") is None and parse_count("-1") is None
    assert in_row_id_range(0) and in_row_id_range(MAX_ROW_ID)
    assert not in_row_id_range(-1) and not in_row_id_range(MAX_ROW_ID + 1)
