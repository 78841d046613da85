"""Row ids as they travel in URLs, GraphQL ``ID`` arguments and page cursors.

An id is written in ASCII decimal digits and stands for an integer from 1 to ``MAX_ROW_ID``, the largest 64-bit
signed integer (primary keys on SQLite and PostgreSQL). ``str.isdigit()`` is not the test: it accepts
characters ``int()`` rejects (``"²"``, ``"①"``) or reads as other numbers (``"１"`` is 1, ``"٣"`` is 3), and a
number past 64 bits makes the database driver overflow. Anything else is no id at all: callers answer "not
found" or "invalid", never an error of their own.
"""

from __future__ import annotations

MAX_ROW_ID = 2**63 - 1


def in_row_id_range(value: int) -> bool:
    """Whether a number fits where ids, attempt numbers and offsets are stored (0 included)."""
    return 0 <= value <= MAX_ROW_ID


def parse_row_id(text: str) -> int | None:
    """The id ``text`` writes (1 to ``MAX_ROW_ID`` in ASCII digits, nothing else around), or None."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_ROW_ID)):
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ROW_ID else None


def parse_count(text: str) -> int | None:
    """A non-negative number in ASCII digits that fits beside ids (attempts, offsets, pages), or None."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_ROW_ID)):
        return None
    value = int(text)
    return value if in_row_id_range(value) else None
