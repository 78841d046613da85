"""API tokens: personal (created/revoked by users), session (web), and run-scoped (injected into nodes).

Only the sha256 of a token is stored; the plaintext is shown once. A run token works as the run's owner
while the run is active and is revoked when the run ends.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from aihub.db.models import ApiToken, TokenKind, User
from aihub.services.errors import Forbidden
from aihub.services.status import utcnow

PREFIX = {TokenKind.PERSONAL: "aih_p_", TokenKind.SESSION: "aih_s_", TokenKind.RUN: "aih_r_"}

#: What a run token (``AI_HUB_TOKEN``, held by node code, which may be someone else's) may call: read its own
#: run and the shared catalogue, follow its own run live. Nothing that creates tokens or runs, changes
#: credentials, sharing, roles, reviews or admin lists. Its outputs reach the server through the artifact routes.
RUN_TOKEN_OPERATIONS: frozenset[str] = frozenset(
    {"me", "run", "virtualClusters", "dataStorages", "categories", "runEvents", "nodeLogs"}
)
#: allowed operations that name a run, and the argument naming it: it must be the token's own run
RUN_TOKEN_RUN_ARGUMENT: dict[str, str] = {"run": "id", "runEvents": "runId", "nodeLogs": "runId"}


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


async def revoke_user_tokens(user_id: int) -> None:
    """Every token of a user (sessions, personal, runs'): done when the user is deactivated."""
    await ApiToken.filter(user_id=user_id, revoked_at=None).update(revoked_at=utcnow())


async def user_for_token(token: str, kinds: frozenset[TokenKind] | None = None) -> User | None:
    """The active user a token stands for, or None (unknown, revoked, expired, its run has ended, or not one
    of ``kinds`` when given)."""
    row = await valid_token(token)
    if row is None or (kinds is not None and row.kind not in kinds):
        return None
    return row.user


def check_run_token_operation(row: ApiToken | None, operation: str, run_id: int | None = None) -> None:
    """Refuse an operation a run token may not call (``Forbidden``); other tokens pass. ``run_id`` is the run
    an operation of ``RUN_TOKEN_RUN_ARGUMENT`` names."""
    if row is None or row.kind is not TokenKind.RUN:
        return
    if operation not in RUN_TOKEN_OPERATIONS:
        raise Forbidden(
            f"a run token (AI_HUB_TOKEN) cannot call {operation!r}; it may call only "
            + ", ".join(sorted(RUN_TOKEN_OPERATIONS)),
            field="Authorization",
        )
    if operation in RUN_TOKEN_RUN_ARGUMENT and run_id != row.run_id:  # type: ignore[attr-defined]
        raise Forbidden(
            f"a run token (AI_HUB_TOKEN) reaches only its own run ({row.run_id})",  # type: ignore[attr-defined]
            field=RUN_TOKEN_RUN_ARGUMENT[operation],
        )


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
