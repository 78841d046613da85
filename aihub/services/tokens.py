"""API tokens: personal (created/revoked by users), session (web), and run-scoped (injected into nodes).

Only the sha256 of a token is stored; the plaintext is shown once. A run token works as the run's owner
while the run is active and is revoked when the run ends.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from aihub.db.models import ApiToken, TokenKind, User
from aihub.services.status import utcnow

PREFIX = {TokenKind.PERSONAL: "aih_p_", TokenKind.SESSION: "aih_s_", TokenKind.RUN: "aih_r_"}


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def issue_token(
    user_id: int,
    kind: TokenKind,
    *,
    name: str = "",
    run_id: int | None = None,
    expires_at: datetime | None = None,
) -> tuple[str, ApiToken]:
    token = PREFIX[kind] + secrets.token_urlsafe(32)
    row = await ApiToken.create(
        user_id=user_id,
        kind=kind,
        name=name,
        token_hash=hash_token(token),
        run_id=run_id,
        expires_at=expires_at,
    )
    return token, row


async def revoke_run_tokens(run_id: int) -> None:
    await ApiToken.filter(run_id=run_id, revoked_at=None).update(revoked_at=utcnow())


async def user_for_token(token: str) -> User | None:
    """The active user a token stands for, or None (unknown, revoked, expired, or its run has ended)."""
    row = await valid_token(token)
    return row.user if row is not None else None


async def valid_token(token: str) -> ApiToken | None:
    """The token's row (with ``user`` and ``run`` loaded) if it is usable now, else None."""
    row = await ApiToken.get_or_none(token_hash=hash_token(token), revoked_at=None).select_related(
        "user", "run"
    )
    if row is None or not row.user.is_active:
        return None
    if row.expires_at is not None and row.expires_at <= utcnow():
        return None
    if row.kind is TokenKind.RUN and (row.run is None or row.run.status.is_terminal):
        return None
    return row
