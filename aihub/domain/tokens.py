"""The kinds of API token: what a bearer token was issued for decides what it may call.

``personal`` tokens are made by a user for tools, ``session`` tokens by a login (web or CLI), ``run`` tokens by
the engine for the nodes of one run (they reach that run only).
"""

from __future__ import annotations

from enum import StrEnum


class TokenKind(StrEnum):
    PERSONAL = "personal"
    SESSION = "session"
    RUN = "run"
