"""Users: password hashing, creation (with team membership), the initial administrator, ``aihub user create``."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import sys
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from aihub.db.models import Team, User
from aihub.db.setup import close_db, init_db, migrate
from aihub.domain.messages import msg
from aihub.services.errors import InvalidInput
from aihub.settings import Settings

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,63}$")
ADMIN_USERNAME = "admin"
TEAM_NAME_MAX = 100

_hasher = PasswordHasher()


class UserError(InvalidInput, ValueError):
    """A user cannot be created as asked; ``field`` names the offending input."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True if ``password`` matches; False for a wrong password or a missing/garbled hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def set_language(user: User, language: str | None) -> None:
    """Remember the UI language ``user`` chose (None: follow the browser)."""
    user.language = language
    await user.save(update_fields=["language"])


def generate_password() -> str:
    return secrets.token_urlsafe(16)


def validate_username(username: str) -> None:
    if not USERNAME_RE.fullmatch(username):
        raise UserError(
            msg(
                "username {name} is invalid: use 2-64 characters a-z, 0-9, '_', '.', '-', "
                "starting with a letter or digit",
                name=repr(username),
            ),
            field="username",
        )


def _validate_new_user(username: str, password: str, team: str | None, leader: bool) -> None:
    validate_username(username)
    if not password:
        raise UserError(msg("password must not be empty"), field="password")
    if team is not None and not (0 < len(team.strip()) <= TEAM_NAME_MAX):
        raise UserError(msg("team name must be 1-{maximum} characters", maximum=TEAM_NAME_MAX), field="team")
    if leader and team is None:
        raise UserError(msg("a team leader needs a team"), field="leader")


async def create_user(
    username: str,
    password: str,
    *,
    is_admin: bool = False,
    team: str | None = None,
    leader: bool = False,
) -> User:
    """Create a user, joining ``team`` (created if missing); ``leader`` makes them one of its leaders."""
    _validate_new_user(username, password, team, leader)
    password_hash = await asyncio.to_thread(hash_password, password)  # argon2 is slow by design
    try:
        async with in_transaction():
            team_row = (await Team.get_or_create(name=team.strip()))[0] if team is not None else None
            return await User.create(
                username=username,
                password_hash=password_hash,
                is_admin=is_admin,
                team=team_row,
                is_team_leader=leader,
            )
    except IntegrityError:
        if await User.filter(username=username).exists():
            raise UserError(
                msg("username {name} is already taken", name=repr(username)), field="username"
            ) from None
        raise


INITIAL_PASSWORD_FILE = "initial-admin-password"


async def ensure_admin(settings: Settings) -> str | None:
    """Create ``admin`` if there is no administrator yet; returns its password if it was generated.

    A generated password is also kept in ``<data_dir>/initial-admin-password`` (readable by its owner only)
    until it is changed, so whichever command created the user — ``aihub run`` or the server — the server can
    tell it again (:func:`initial_admin_password`).
    """
    if await User.filter(is_admin=True).exists():
        return None
    password = settings.admin_password or generate_password()
    try:
        await create_user(ADMIN_USERNAME, password, is_admin=True)
    except UserError as exc:
        if exc.field == "username" and await User.filter(is_admin=True).exists():
            return None  # another process created it first
        raise UserError(
            msg(
                "there is no administrator and the user {name} cannot be created ({reason}); "
                "create one with `aihub user create NAME --admin`",
                name=repr(ADMIN_USERNAME),
                reason=exc.message,
            ),
            field="username",
        ) from exc
    if settings.admin_password:
        return None
    await asyncio.to_thread(_write_private, settings.data_dir / INITIAL_PASSWORD_FILE, password)
    return password


async def get_admin() -> User:
    """The user ``admin`` (the embedded ``aihub run`` runs as it; :func:`ensure_admin` made it)."""
    return await User.get(username=ADMIN_USERNAME)


async def initial_admin_password(settings: Settings) -> str | None:
    """The generated password of ``admin`` while it is still the one in force; the kept file goes after."""
    path = settings.data_dir / INITIAL_PASSWORD_FILE
    try:
        password = (await asyncio.to_thread(path.read_text)).strip()
    except OSError:
        return None
    admin = await User.get_or_none(username=ADMIN_USERNAME)
    if (
        admin is not None
        and password
        and await asyncio.to_thread(verify_password, admin.password_hash, password)
    ):
        return password
    await asyncio.to_thread(path.unlink, missing_ok=True)  # changed since: nothing worth keeping
    return None


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


async def create_user_cli(settings: Settings, args: argparse.Namespace) -> int:
    """``aihub user create NAME [--password P] [--admin] [--team T [--leader]]``."""
    password = args.password or generate_password()
    await migrate(settings)
    await init_db(settings)
    try:
        user = await create_user(args.name, password, is_admin=args.admin, team=args.team, leader=args.leader)
    except UserError as exc:
        print(f"aihub user create: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await close_db()
    print(f"created {_describe(user, args.team)}")
    if not args.password:
        print(f"password: {password}")
    return 0


def _describe(user: User, team: str | None) -> str:
    text = f"{'administrator' if user.is_admin else 'user'} {user.username!r}"
    if team:
        text += f" in team {team.strip()!r}" + (" as its leader" if user.is_team_leader else "")
    return text
