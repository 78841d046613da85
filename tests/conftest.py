"""Shared fixtures: a fresh database per test, on SQLite and on PostgreSQL.

- ``db_backend``: ``"sqlite"`` | ``"postgres"``; every test that (indirectly) uses it runs once per backend.
  A module that only wants SQLite writes ``pytestmark = pytest.mark.parametrize("db_backend", ["sqlite"],
  indirect=True)`` (or uses ``sqlite_db``).
- ``database_url``: a new, empty database of that backend (a temp SQLite file, or a uniquely named
  PostgreSQL database dropped after the test).
- ``new_database_url``: ``await new_database_url("sqlite" | "postgres")`` for tests that need more databases.
- ``settings``: ``Settings`` with ``data_dir=tmp_path/"data"`` and ``database_url``.
- ``db``: migrated and connected database for ``settings``; yields the settings; closed afterwards.
- ``sqlite_db``: the same on SQLite only, whatever the backend parametrisation; yields its own settings.

PostgreSQL is ``AIHUB_TEST_POSTGRES_URL`` (default ``postgres://postgres@127.0.0.1:5432/test``). When it is
unreachable, PostgreSQL tests skip locally and fail when ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import tortoise.context

from aihub.db import node_writes
from aihub.db.models import NodeRun
from aihub.db.setup import close_db, init_db, migrate
from aihub.domain.status import NodeStatus
from aihub.settings import Settings
from tests.s3support import CREDENTIALS, S3Server

POSTGRES_ADMIN_URL = os.environ.get("AIHUB_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgres"]

NewDatabaseUrl = Callable[[str], Awaitable[str]]

_postgres_unavailable: str | None = None


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No developer ``AIHUB_*`` setting leaks into a test; no test leaves Tortoise initialised."""
    for name in list(os.environ):
        if name.startswith("AIHUB_"):
            monkeypatch.delenv(name)
    yield
    leaked = tortoise.context._global_context
    if leaked is not None:
        tortoise.context._global_context = None
        pytest.fail("the test left a Tortoise context open: call aihub.db.setup.close_db()")


async def _admin_connection() -> asyncpg.Connection:
    global _postgres_unavailable
    if _postgres_unavailable is None:
        try:
            return await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            _postgres_unavailable = f"PostgreSQL at {POSTGRES_ADMIN_URL} is unavailable: {exc!r}"
    if os.environ.get("CI") == "true":
        pytest.fail(_postgres_unavailable)
    pytest.skip(_postgres_unavailable)


def _database_url(admin_url: str, name: str) -> str:
    return admin_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
async def new_database_url(tmp_path: Path) -> AsyncIterator[NewDatabaseUrl]:
    created: list[str] = []

    async def new(backend: str) -> str:
        name = f"aihub_t_{uuid.uuid4().hex[:16]}"
        if backend == "sqlite":
            return f"sqlite://{tmp_path / 'databases' / name}.sqlite3"
        if backend != "postgres":
            raise ValueError(f"unknown backend {backend!r}")
        admin = await _admin_connection()
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        created.append(name)
        return _database_url(POSTGRES_ADMIN_URL, name)

    yield new
    if created:
        admin = await _admin_connection()
        try:
            for name in created:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(params=BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def database_url(db_backend: str, new_database_url: NewDatabaseUrl) -> str:
    return await new_database_url(db_backend)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


@asynccontextmanager
async def open_db(settings: Settings) -> AsyncIterator[Settings]:
    """Migrate, connect, and always disconnect."""
    await migrate(settings)
    await init_db(settings)
    try:
        yield settings
    finally:
        await close_db()


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Settings]:
    async with open_db(settings) as ready:
        yield ready


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Settings]:
    """SQLite at its default place (``data_dir/aihub.sqlite3``), as an installation without settings gets."""
    async with open_db(Settings(data_dir=tmp_path / "sqlite-data")) as ready:
        yield ready


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 HTTP server (moto_server) on 127.0.0.1 for the whole session; AWS_* test credentials set."""
    for name, value in CREDENTIALS.items():
        os.environ[name] = value
    server = S3Server.start(tmp_path_factory.mktemp("s3") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


# In CI every test must run: a skip there means a dependency the set-up should have installed is missing (podman,
# chromium, root for the namespaces), and a suite that silently skips a whole component is not a green suite.
_skipped_in_ci: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and os.environ.get("CI") == "true":
        _skipped_in_ci.append(
            f"{report.nodeid}: {report.longrepr[-1] if isinstance(report.longrepr, tuple) else ''}"
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped_in_ci and exitstatus == 0:
        print(
            "\nCI=true and tests were skipped (each must run in CI; install what they need):",
            *_skipped_in_ci,
            sep="\n  ",
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A host directory nodes can see: the local executor gives every node a private /tmp, so pytest's
    tmp_path (under /tmp) is invisible inside nodes."""
    path = Path(tempfile.mkdtemp(prefix="aihub-test-", dir="/var/tmp"))
    path.chmod(0o777)  # nodes run as nobody (the server is root here)
    yield path
    shutil.rmtree(path, ignore_errors=True)


NodeTransactions = list[tuple[str, NodeStatus, NodeStatus]]


@pytest.fixture
def node_transactions(monkeypatch: pytest.MonkeyPatch) -> NodeTransactions:
    """Each node status transaction from here on (``node_writes.write_transition``): (the node, the status it moves
    from, the status written)."""
    seen: NodeTransactions = []
    write = node_writes.write_transition

    async def counted(node: NodeRun, previous: NodeStatus, *args: Any) -> bool:
        seen.append((node.name, previous, node.status))
        return await write(node, previous, *args)

    monkeypatch.setattr(node_writes, "write_transition", counted)
    return seen
