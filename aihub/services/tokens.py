"""API tokens: personal (created/revoked by users), session (web), and run-scoped (injected into nodes).

Only the sha256 of a token is stored; the plaintext is shown once. A run token works as the run's owner
while the run is active and is revoked when the run ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import time
from datetime import datetime
from typing import Any

from tortoise.signals import post_save

from aihub.bus.base import Bus
from aihub.db.models import ApiToken, TokenKind, User
from aihub.domain.clock import utcnow
from aihub.domain.messages import msg
from aihub.services.errors import Forbidden

log = logging.getLogger(__name__)

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
    await tokens_changed(user_id=user_id)


# ------------------------------------------------------------------------------------------- the cache
class TokenCache:
    """Session and personal tokens looked up recently, with their user: most requests of a client reuse one
    token, and the lookup (a joined query through the ORM) was half the cost of a small GraphQL query.

    Correctness rests on invalidation, not on the TTL: every change that can make a cached row wrong — a
    revoked token, a saved or deactivated user, a bulk change of users — calls :func:`tokens_changed`, which
    forgets the entries here at once and tells the other processes through the bus (a control message). A
    lookup that raced with an invalidation is not stored (``generation``). Expiry is checked on every use.
    Run tokens are never cached: their validity follows their run's status, which changes too often.
    The TTL only bounds what a lost control message could cost."""

    TTL = 60.0
    MAX_SIZE = 10_000

    def __init__(self) -> None:
        self._rows: dict[str, tuple[ApiToken, float]] = {}
        self.generation = 0

    def get(self, key: str) -> ApiToken | None:
        entry = self._rows.get(key)
        if entry is None:
            return None
        row, stored = entry
        if time.monotonic() - stored > self.TTL:
            del self._rows[key]
            return None
        return row

    def put(self, key: str, row: ApiToken, generation: int) -> None:
        if row.kind is TokenKind.RUN or generation != self.generation:
            return
        if len(self._rows) >= self.MAX_SIZE:
            del self._rows[next(iter(self._rows))]  # the oldest entry
        self._rows[key] = (row, time.monotonic())

    def forget(self, *, user_id: int | None = None, token_hash: str | None = None) -> None:
        """Forget the entries of a user, or one token, or (neither given) everything."""
        self.generation += 1
        if token_hash is not None:
            self._rows.pop(token_hash, None)
        elif user_id is not None:
            for key in [k for k, (row, _) in self._rows.items() if row.user_id == user_id]:  # type: ignore[attr-defined]
                del self._rows[key]
        else:
            self._rows.clear()

    def __len__(self) -> int:
        return len(self._rows)


cache = TokenCache()
_buses: list[Bus] = []
CONTROL = "tokens"


def _on_control(message: dict[str, Any]) -> None:
    if message.get("control") == CONTROL:
        cache.forget(user_id=message.get("user_id"), token_hash=message.get("token_hash"))


def attach_bus(bus: Bus) -> None:
    """Share invalidations through ``bus`` (the runtime calls this when it starts; :func:`detach_bus` when
    it stops)."""
    bus.on_control(_on_control)
    _buses.append(bus)


def detach_bus(bus: Bus) -> None:
    bus.off_control(_on_control)
    with contextlib.suppress(ValueError):
        _buses.remove(bus)


async def tokens_changed(*, user_id: int | None = None, token_hash: str | None = None) -> None:
    """A token or a user changed (neither given: several users): forget the cached rows here, now, and in
    every other process through the bus."""
    cache.forget(user_id=user_id, token_hash=token_hash)
    message = {"control": CONTROL, "user_id": user_id, "token_hash": token_hash}
    for bus in list(_buses):
        try:
            await bus.publish_control(message)
        except Exception:  # the local cache is right; other processes fall back on the TTL
            log.exception("could not publish a token invalidation")


@post_save(User)
async def _user_saved(sender: type[User], instance: User, created: bool, *args: Any) -> None:
    """Any saved change of a user (active, admin, team leader, language, password) reaches cached rows."""
    if not created:
        await tokens_changed(user_id=instance.id)


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
            msg(
                "a run token (AI_HUB_TOKEN) cannot call {operation}; it may call only {operations}",
                operation=repr(operation),
                operations=", ".join(sorted(RUN_TOKEN_OPERATIONS)),
            ),
            field="Authorization",
        )
    if operation in RUN_TOKEN_RUN_ARGUMENT and run_id != row.run_id:  # type: ignore[attr-defined]
        raise Forbidden(
            msg("a run token (AI_HUB_TOKEN) reaches only its own run ({run})", run=row.run_id),  # type: ignore[attr-defined]
            field=RUN_TOKEN_RUN_ARGUMENT[operation],
        )


async def valid_token(token: str) -> ApiToken | None:
    """The token's row (with ``user`` and ``run`` loaded) if it is usable now, else None."""
    key = hash_token(token)
    row = cache.get(key)
    if row is None:
        generation = cache.generation
        row = await ApiToken.get_or_none(token_hash=key, revoked_at=None).select_related("user", "run")
        if row is None:
            return None
        cache.put(key, row, generation)
    if not row.user.is_active:
        return None
    if row.expires_at is not None and row.expires_at <= utcnow():
        return None
    if row.kind is TokenKind.RUN and (row.run is None or row.run.status.is_terminal):
        return None
    return row
