"""Authentication: log in (a session token), log out, personal access tokens, password changes.

Tokens are bearer secrets; only their sha256 is stored (``aihub.services.tokens``). A wrong username and a wrong
password get the same answer, and both cost one password hash, so neither message nor timing tells which.
Repeated failures are refused with ``TooManyAttempts`` (``aihub.services.ratelimit``).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from aihub.db.models import ApiToken, TokenKind, User
from aihub.domain.clock import utcnow
from aihub.domain.messages import msg
from aihub.services.admin import check_password
from aihub.services.errors import InvalidInput, NotFound, ServiceError
from aihub.services.ratelimit import login_limiter
from aihub.services.tokens import hash_token, issue_token, tokens_changed, user_for_token, valid_token
from aihub.services.users import hash_password, verify_password

SESSION_LIFETIME = timedelta(days=14)
MAX_TOKEN_DAYS = 3650

_DUMMY_HASH: str | None = None


class Unauthenticated(ServiceError):
    """No valid credentials: the request needs a token (or the one given is unknown, revoked or expired)."""

    code = "UNAUTHENTICATED"


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password("not-a-real-password")
    return _DUMMY_HASH


async def login(username: str, password: str, *, client: str | None = None) -> tuple[str, User]:
    """A new session token for valid credentials of an active user.

    Failed logins are limited per username and per ``client`` address (``aihub.services.ratelimit``; the
    counts are per server process): over a limit, ``TooManyAttempts`` comes before any password check.
    """
    attempt = login_limiter.begin(username, client)
    try:
        user = await _verified_user(username, password)
    except Unauthenticated:
        raise  # counted as a failure
    except BaseException:
        login_limiter.abandoned(attempt)
        raise
    login_limiter.succeeded(attempt)
    token, _ = await issue_token(
        user.id, TokenKind.SESSION, name="login", expires_at=utcnow() + SESSION_LIFETIME
    )
    return token, user


async def _verified_user(username: str, password: str) -> User:
    user = await User.get_or_none(username=username.strip())
    stored = (
        user.password_hash
        if user is not None and user.password_hash
        else await asyncio.to_thread(_dummy_hash)
    )
    valid = await asyncio.to_thread(verify_password, stored, password)
    if user is None or not user.is_active or not valid:
        raise Unauthenticated(msg("wrong username or password"), field="password")
    return user


#: the only tokens a web session cookie may carry (a run or personal token there would open the web pages,
#: which the run token's allow-list does not cover)
WEB_SESSION_KINDS = frozenset({TokenKind.SESSION})


async def authenticate(token: str, kinds: frozenset[TokenKind] | None = None) -> User | None:
    return await user_for_token(token, kinds)


async def token_row(token: str) -> ApiToken | None:
    """The usable token's row (``user`` and ``run`` loaded), or None."""
    return await valid_token(token)


async def logout(token: str) -> bool:
    """Revoke the session or personal token used for the request; run tokens end with their run."""
    key = hash_token(token)
    updated = await ApiToken.filter(
        token_hash=key, revoked_at=None, kind__in=[TokenKind.SESSION, TokenKind.PERSONAL]
    ).update(revoked_at=utcnow())
    await tokens_changed(token_hash=key)
    return bool(updated)


async def create_personal_token(
    user: User, name: str, *, expires_in_days: int | None = None
) -> tuple[str, ApiToken]:
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidInput(msg("a token needs a name of 1 to 100 characters"), field="name")
    expires_at = None
    if expires_in_days is not None:
        if not 1 <= expires_in_days <= MAX_TOKEN_DAYS:
            raise InvalidInput(
                msg(
                    "expiresInDays must be between 1 and {maximum} (got {value})",
                    maximum=MAX_TOKEN_DAYS,
                    value=expires_in_days,
                ),
                field="expiresInDays",
            )
        expires_at = utcnow() + timedelta(days=expires_in_days)
    return await issue_token(user.id, TokenKind.PERSONAL, name=name, expires_at=expires_at)


async def list_personal_tokens(user: User) -> list[ApiToken]:
    return await ApiToken.filter(user_id=user.id, kind=TokenKind.PERSONAL).order_by("-id")


async def revoke_personal_token(user: User, token_id: int) -> ApiToken:
    """Revoke one of the caller's personal tokens (admins may revoke anybody's)."""
    query = ApiToken.filter(id=token_id, kind=TokenKind.PERSONAL)
    if not user.is_admin:
        query = query.filter(user_id=user.id)
    row = await query.first()
    if row is None:
        raise NotFound(msg("token {token} not found", token=token_id), field="id")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await row.save(update_fields=["revoked_at"])
        await tokens_changed(token_hash=row.token_hash)
    return row


async def change_password(user: User, old_password: str, new_password: str) -> None:
    if not await asyncio.to_thread(verify_password, user.password_hash, old_password):
        raise InvalidInput(msg("the current password is wrong"), field="oldPassword")
    check_password(new_password, field="newPassword")
    user.password_hash = await asyncio.to_thread(hash_password, new_password)
    await user.save(update_fields=["password_hash"])
