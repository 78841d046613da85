"""The whole application in this process on a scratch SQLite data dir, with the admin's session token: the set-up
of the in-process API benchmarks (``token_cache.py``, ``status_path.py``). The data dir is removed afterwards."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aihub.app import create_app  # noqa: E402
from aihub.db.models import TokenKind, User  # noqa: E402
from aihub.services.tokens import issue_token  # noqa: E402
from aihub.settings import Settings  # noqa: E402


@asynccontextmanager
async def scratch_app(prefix: str) -> AsyncIterator[tuple[Starlette, User, str]]:
    """(the app, started without the engine; the admin; a session token of the admin)."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    try:
        app = create_app(Settings(data_dir=data_dir), run_engine=False)
        async with app.router.lifespan_context(app):
            user = await User.get(username="admin")
            token, _ = await issue_token(user.id, TokenKind.SESSION)
            yield app, user, token
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
