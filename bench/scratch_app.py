"""The whole application in this process on a scratch data dir, with the admin's session token: the set-up of the
in-process API benchmarks (``token_cache.py``, ``status_path.py``). The database is SQLite in the data dir, or,
when ``AIHUB_DATABASE_URL`` names a PostgreSQL server, a new database there (``scratch_database``, also used by
``api.py``). Both are removed afterwards."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from starlette.applications import Starlette

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aihub.app import create_app  # noqa: E402
from aihub.db.models import TokenKind, User  # noqa: E402
from aihub.services.tokens import issue_token  # noqa: E402
from aihub.settings import Settings  # noqa: E402


@asynccontextmanager
async def scratch_database(data_dir: Path) -> AsyncIterator[str]:
    """The URL of a new database: on the PostgreSQL server of ``AIHUB_DATABASE_URL`` if it names one (dropped
    afterwards), else SQLite in ``data_dir``."""
    admin_url = os.environ.get("AIHUB_DATABASE_URL") or ""
    if not admin_url.startswith("postgres"):
        yield f"sqlite://{data_dir / 'aihub.sqlite3'}"
        return
    name = f"aihub_bench_{uuid.uuid4().hex[:12]}"
    await _admin(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _admin(url: str, statement: str) -> None:
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@asynccontextmanager
async def scratch_app(prefix: str) -> AsyncIterator[tuple[Starlette, User, str]]:
    """(the app, started without the engine; the admin; a session token of the admin)."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    try:
        async with scratch_database(data_dir) as database_url:
            app = create_app(Settings(data_dir=data_dir, database_url=database_url), run_engine=False)
            async with app.router.lifespan_context(app):
                user = await User.get(username="admin")
                token, _ = await issue_token(user.id, TokenKind.SESSION)
                yield app, user, token
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
