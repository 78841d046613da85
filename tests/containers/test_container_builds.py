"""AIHUB_BUILDER=container: a module's image built for real (FROM, RUN, COPY), pushed, and run by a module node."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator

import pytest

from aihub.db.models import BuildStatus, User
from aihub.domain.status import RunStatus
from aihub.runtime import Runtime, open_runtime
from aihub.services.users import create_user
from aihub.settings import Settings
from tests.containers.support import Engine, Registry
from tests.containers.test_container_executor import container_settings
from tests.engine.support import node_log, start_run, wait_for_run
from tests.modules.conftest import GitRepo, MakeRepo, newest_build, register

pytestmark = pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)

GREET = """\
cat /opt/built.txt
for arg in "$@"; do echo "arg: $arg"; done
"""


@pytest.fixture
async def brt(
    settings: Settings, container_engine: Engine, busybox_image: str, registry: Registry
) -> AsyncIterator[Runtime]:
    container_settings(settings, container_engine, busybox_image)
    settings.allow_file_git = True
    settings.builder = "container"
    settings.registry = registry.address
    settings.registry_insecure = True
    async with open_runtime(settings) as runtime:
        yield runtime
        await runtime.executor.settle()  # type: ignore[attr-defined]


@pytest.fixture
async def owner(brt: Runtime) -> User:
    return await create_user("alice", "alice-password-1")


def greeter_repo(
    make_repo: MakeRepo,
    base_image: str,
    *,
    run: str = 'mkdir -p /opt && echo "made by RUN: $((6 * 7))" > /opt/built.txt',
) -> GitRepo:
    repo = make_repo(None)
    repo.write(
        "docker/Dockerfile",
        f'FROM {base_image}\nRUN {run}\nCOPY greet.sh /opt/greet.sh\nENTRYPOINT ["sh", "/opt/greet.sh"]\n',
    )
    repo.write("src/greet.sh", GREET)
    repo.write("README.md", "# greeter\n\nPrints what its image's RUN step wrote, then its arguments.\n")
    repo.commit("greeter")
    return repo


def registry_tags(registry: Registry, name: str) -> list[str]:
    with urllib.request.urlopen(f"http://{registry.address}/v2/{name}/tags/list", timeout=10) as answer:
        return list(json.load(answer)["tags"])


async def test_a_module_image_is_built_pushed_and_run_by_a_module_node(
    brt: Runtime,
    owner: User,
    make_repo: MakeRepo,
    busybox_image: str,
    registry: Registry,
    container_engine: Engine,
) -> None:
    module = await register(
        brt.builds,
        owner,
        greeter_repo(make_repo, busybox_image),
        name="greeter",
        dockerfile_path="docker/Dockerfile",
        build_context="src",
        inputs=[{"name": "who"}, {"name": "times"}],
        outputs=[],
    )
    build = await newest_build(module)
    assert build.status is BuildStatus.BUILT, build.message
    assert build.image.startswith(f"{registry.address}/")
    build_log = (brt.settings.data_dir / "builds" / f"{build.id}.log").read_text()
    assert "STEP" in build_log and "push" in build_log, build_log
    name, _, tag = build.image.partition("/")[2].rpartition(":")
    assert tag in await asyncio.to_thread(registry_tags, registry, name)
    container_engine.run("rmi", build.image)  # the node's container must pull it from the registry
    spec = {
        "name": "greet",
        "nodes": [
            {
                "name": "g",
                "module": "greeter",
                "inputs": [{"name": "who", "value": "world $(id)"}, {"name": "times", "value": 2}],
            }
        ],
    }
    run = await wait_for_run(brt, (await start_run(brt, owner, spec)).id, timeout=120)
    assert run.status is RunStatus.SUCCEEDED, run.message
    assert (await node_log(brt, run.id, "g")).splitlines() == [
        "made by RUN: 42",
        "arg: --who=world $(id)",
        "arg: --times=2",
    ]


async def test_a_failing_run_step_fails_the_build_with_the_engines_words(
    brt: Runtime,
    owner: User,
    make_repo: MakeRepo,
    busybox_image: str,
) -> None:
    repo = greeter_repo(make_repo, busybox_image, run="echo broken-step >&2; exit 3")
    module = await register(
        brt.builds, owner, repo, name="broken", dockerfile_path="docker/Dockerfile", build_context="src",
        inputs=[], outputs=[],
    )  # fmt: skip
    build = await newest_build(module)
    assert build.status is BuildStatus.BUILD_FAILED
    assert "build failed" in build.message and "broken-step" in build.message, build.message
