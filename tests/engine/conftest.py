"""Engine fixtures: a whole runtime (database, bus, storage, local executor, engine) per test."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

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


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A host directory nodes can see: the local executor gives every node a private /tmp, so pytest's
    tmp_path (under /tmp) is invisible inside nodes."""
    path = Path(tempfile.mkdtemp(prefix="aihub-test-", dir="/var/tmp"))
    path.chmod(0o777)  # nodes run as nobody (the server is root here)
    yield path
    shutil.rmtree(path, ignore_errors=True)
