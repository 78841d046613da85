"""Users: password hashing, ``create_user`` / ``ensure_admin``, and the real ``aihub user create`` and
``aihub migrate`` commands in a subprocess, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from aihub.db.models import Team, User
from aihub.db.setup import migrations_dir
from aihub.services.users import (
    UserError,
    create_user,
    ensure_admin,
    hash_password,
    initial_admin_password,
    verify_password,
)
from aihub.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    code: int | None
    out: str
    err: str


async def aihub(settings: Settings, *args: str) -> Result:
    """Run the real CLI against the database of ``settings``."""
    env = {**os.environ, "AIHUB_DATA_DIR": str(settings.data_dir)}
    if settings.database_url:
        env["AIHUB_DATABASE_URL"] = settings.database_url
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aihub.cli",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(100):
        out, err = await proc.communicate()
    return Result(proc.returncode, out.decode(), err.decode())


# --- passwords ----------------------------------------------------------------------------------------------


def test_password_hash_verifies_only_the_right_password() -> None:
    hashed = hash_password("s3cret-密码")
    assert hashed.startswith("$argon2") and "s3cret" not in hashed
    assert verify_password(hashed, "s3cret-密码")
    assert not verify_password(hashed, "s3cret-密")
    assert hash_password("s3cret-密码") != hashed  # salted


@pytest.mark.parametrize("bad_hash", ["", "not-a-hash", "$argon2id$v=19$m=65536,t=3,p=4$garbled"])
def test_verify_rejects_missing_or_garbled_hashes(bad_hash: str) -> None:
    assert verify_password(bad_hash, "anything") is False


# --- create_user / ensure_admin -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ab", "a.b_c-d", "0user", "x" * 64])
async def test_valid_usernames(db: Settings, name: str) -> None:
    user = await create_user(name, "pw")
    assert (await User.get(id=user.id)).username == name


@pytest.mark.parametrize("name", ["a", "-ab", "_ab", "Alice", "a b", "x" * 65, "ünï", "a/b", ""])
async def test_invalid_usernames_name_the_field(db: Settings, name: str) -> None:
    with pytest.raises(UserError, match="username") as info:
        await create_user(name, "pw")
    assert info.value.field == "username"
    assert isinstance(info.value, ValueError)
    assert await User.all().count() == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"password": ""}, "password"),
        ({"password": "pw", "leader": True}, "leader"),
        ({"password": "pw", "team": " "}, "team"),
        ({"password": "pw", "team": "t" * 101}, "team"),
    ],
)
async def test_invalid_inputs_name_the_field(db: Settings, kwargs: dict, field: str) -> None:
    with pytest.raises(UserError) as info:
        await create_user("alice", **kwargs)
    assert info.value.field == field


async def test_duplicate_username_is_a_user_error(db: Settings) -> None:
    await create_user("alice", "pw")
    with pytest.raises(UserError, match="already taken") as info:
        await create_user("alice", "other", team="new-team")
    assert info.value.field == "username"
    assert not await Team.filter(name="new-team").exists()  # nothing half-done


async def test_team_is_created_once_and_leader_flag_set(db: Settings) -> None:
    lead = await create_user("lead", "pw", team="vision", leader=True)
    member = await create_user("member", "pw", team="vision")
    assert await Team.filter(name="vision").count() == 1
    lead, member = await User.get(id=lead.id), await User.get(id=member.id)
    assert lead.team_id == member.team_id is not None
    assert (lead.is_team_leader, member.is_team_leader) == (True, False)
    assert verify_password(lead.password_hash, "pw")


async def test_ensure_admin_generates_a_password_once(db: Settings) -> None:
    password = await ensure_admin(db)
    assert password
    admin = await User.get(username="admin")
    assert admin.is_admin and verify_password(admin.password_hash, password)
    assert await ensure_admin(db) is None
    assert await User.filter(is_admin=True).count() == 1


async def test_the_generated_password_is_told_again_until_it_is_changed(db: Settings) -> None:
    """`aihub run` may create the user before the first `make run`: the server must still be able to tell it."""
    from aihub.services.auth import change_password

    password = await ensure_admin(db)
    kept = db.data_dir / "initial-admin-password"
    assert kept.stat().st_mode & 0o777 == 0o600
    assert await initial_admin_password(db) == password
    await change_password(await User.get(username="admin"), password, "a-new-password-1")
    assert await initial_admin_password(db) is None
    assert not kept.exists()


async def test_ensure_admin_uses_the_configured_password(db: Settings) -> None:
    db.admin_password = "from-env"
    assert await ensure_admin(db) is None
    assert await initial_admin_password(db) is None
    assert verify_password((await User.get(username="admin")).password_hash, "from-env")


async def test_ensure_admin_keeps_an_existing_administrator(db: Settings) -> None:
    await create_user("root", "pw", is_admin=True)
    assert await ensure_admin(db) is None
    assert not await User.filter(username="admin").exists()


async def test_ensure_admin_explains_a_taken_admin_name(db: Settings) -> None:
    await create_user("admin", "pw")
    with pytest.raises(UserError, match="aihub user create NAME --admin"):
        await ensure_admin(db)


# --- the CLI ------------------------------------------------------------------------------------------------


async def test_migrate_twice_via_the_cli(settings: Settings) -> None:
    first = await aihub(settings, "migrate")
    assert first.code == 0, first.err
    migrations = sorted(p.name for p in migrations_dir().glob("*.py") if p.name[0].isdigit())
    assert first.out.split() == migrations
    second = await aihub(settings, "migrate")
    assert (second.code, second.out.strip()) == (0, "database is up to date"), second.err


async def test_user_create_prints_a_generated_password_once(db: Settings) -> None:
    result = await aihub(db, "user", "create", "alice")
    assert result.code == 0, result.err
    password_lines = [line for line in result.out.splitlines() if line.startswith("password: ")]
    assert len(password_lines) == 1
    password = password_lines[0].removeprefix("password: ")
    user = await User.get(username="alice")
    assert verify_password(user.password_hash, password)
    assert (user.is_admin, user.team_id, user.is_team_leader) == (False, None, False)


async def test_user_create_with_every_option(db: Settings) -> None:
    result = await aihub(
        db, "user", "create", "bob", "--password", "given-pw", "--admin", "--team", "vision", "--leader"
    )
    assert result.code == 0, result.err
    assert "given-pw" not in result.out and "password" not in result.out
    assert "created administrator 'bob' in team 'vision' as its leader" in result.out
    bob = await User.get(username="bob").prefetch_related("team")
    assert (bob.is_admin, bob.is_team_leader, bob.team.name) == (True, True, "vision")
    assert verify_password(bob.password_hash, "given-pw")


async def test_user_create_on_a_fresh_database_migrates_it(settings: Settings) -> None:
    result = await aihub(settings, "user", "create", "first")
    assert result.code == 0, result.err
    assert (await aihub(settings, "migrate")).out.strip() == "database is up to date"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["alice"], "username 'alice' is already taken"),
        (["Not Valid"], "username 'Not Valid' is invalid"),
        (["carol", "--leader"], "a team leader needs a team"),
    ],
)
async def test_user_create_fails_clearly(db: Settings, args: list[str], message: str) -> None:
    await create_user("alice", "pw")
    result = await aihub(db, "user", "create", *args)
    assert result.code == 1
    assert message in result.err
    assert "Traceback" not in result.err
    assert "password:" not in result.out
    assert await User.all().count() == 1
