"""Engine fixtures: a whole runtime (database, bus, storage, local executor, engine) per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aihub.db.models import User
from aihub.runtime import Runtime, open_runtime
from aihub.services.users import create_user
from aihub.settings import Settings


@pytest.fixture
async def rt(settings: Settings) -> AsyncIterator[Runtime]:
    settings.stop_grace_seconds = 2.0
    async with open_runtime(settings) as runtime:
        yield runtime


@pytest.fixture
async def user(rt: Runtime) -> User:
    return await create_user("alice", "alice-password-1")
