"""Module fixtures: real git repositories made from ``examples/modules`` in temp dirs, users and a build manager.

Repositories are served as ``file://`` URLs, so the settings of these tests allow them (an installation does
not by default).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aihub.db.models import Category, Module, ModuleBuild, User
from aihub.engine.builds import BuildManager
from aihub.services.modules import DbBuildStore, create_module
from aihub.services.users import create_user
from aihub.settings import Settings
from tests.engine.conftest import rt, user  # noqa: F401  (fixtures reused by the module tests)
from tests.graphql.conftest import (  # noqa: F401  (the API server; cheap argon2 for every module test)
    _fast_password_hashing,
    app_options,
    server,
    users,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "modules"

HASH_FILE_INTERFACE: dict[str, Any] = {
    "inputs": [
        {"name": "input_file", "description": "path of the file to hash"},
        {"name": "algorithm", "description": "hashlib algorithm"},
    ],
    "outputs": [
        {"name": "digest", "path": "/tmp/workflow_space/hash-file/digest.txt", "type": "text"},
    ],
}
CSV_STATS_INTERFACE: dict[str, Any] = {
    "inputs": [
        {"name": "csv_file", "description": "path of the CSV file"},
        {"name": "column", "description": "numeric column"},
    ],
    "outputs": [
        {"name": "stats", "path": "/tmp/workflow_space/csv-stats/stats.json", "type": "path"},
        {"name": "mean", "path": "/tmp/workflow_space/csv-stats/mean.txt", "type": "text"},
    ],
}


@dataclass
class GitRepo:
    """A real repository on disk; ``url`` is its ``file://`` URL."""

    path: Path

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
            cwd=self.path,
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip()

    def write(self, relative: str, text: str) -> None:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def add_example(self, example: str, into: str = ".") -> None:
        shutil.copytree(EXAMPLES / example, self.path / into, dirs_exist_ok=True)

    def commit(self, message: str = "change") -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")


MakeRepo = Callable[..., GitRepo]


@pytest.fixture
def make_repo(tmp_path: Path) -> MakeRepo:
    """``make_repo("hash-file")``: a repository with that example at its root (or under ``into``), committed
    on ``main``."""
    counter = iter(range(1000))

    def make(example: str | None = "hash-file", *, into: str = ".") -> GitRepo:
        repo = GitRepo(tmp_path / "repos" / f"repo{next(counter)}")
        repo.path.mkdir(parents=True)
        repo.git("init", "-q", "-b", "main")
        if example is not None:
            repo.add_example(example, into)
            repo.commit("initial")
        return repo

    return make


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.allow_file_git = True
    return settings


@pytest.fixture
async def builds(db: Settings) -> AsyncIterator[BuildManager]:
    """A started build manager on the test database (no engine)."""
    manager = BuildManager(db, DbBuildStore(), git_timeout=60)
    await manager.start()
    try:
        yield manager
    finally:
        await manager.close()


@pytest.fixture
async def category(db: Settings) -> Category:
    return await Category.create(name="data-processing")


async def make_user(name: str, **kwargs: Any) -> User:
    return await create_user(name, f"{name}-password-1", **kwargs)


async def newest_build(module: Module) -> ModuleBuild:
    build = await ModuleBuild.filter(module_id=module.id).order_by("-number").first()
    assert build is not None
    return build


async def register(
    builds: BuildManager,
    owner: User,
    repo: GitRepo,
    *,
    name: str = "hash-file",
    interface: dict[str, Any] | None = None,
    wait: bool = True,
    **fields: Any,
) -> Module:
    """Register a module (category ``data-processing`` by default) and wait for its build."""
    await Category.get_or_create(name=fields.get("category", "data-processing"))
    values: dict[str, Any] = {"category": "data-processing", "git_url": repo.url, "ref": "main"}
    values.update(interface if interface is not None else HASH_FILE_INTERFACE)
    values.update(fields)
    module = await create_module(builds, owner, name=name, **values)
    if wait:
        await builds.wait((await newest_build(module)).id)
        await module.refresh_from_db()
    return module
