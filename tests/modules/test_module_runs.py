"""Module nodes through the real engine: the pinned build's code runs with ``--name=value`` argv, module env
under node env, outputs from the module's declared paths; result caching with its opt-outs."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from aihub.db.models import Attempt, ModuleBuild, NodeRun, User
from aihub.domain.status import NodeStatus, RunStatus
from aihub.runtime import Runtime
from aihub.services.errors import InvalidInput
from aihub.services.modules import update_module
from aihub.services.runs import create_run
from aihub.services.workflows import create_version, create_workflow
from tests.engine.support import node_log, wait_for_run
from tests.modules.conftest import GitRepo, MakeRepo, make_user, newest_build, register

DATA = "line one\nline two\n"

ECHO_MAIN = """\
import argparse, json, os, sys

parser = argparse.ArgumentParser()
parser.add_argument("--text", required=True)
parser.add_argument("--count", required=True)
args = parser.parse_args()
os.makedirs("/tmp/workflow_space/echo", exist_ok=True)
report = {
    "argv": sys.argv[1:],
    "cwd": os.getcwd(),
    "env": {k: os.environ.get(k) for k in ("GREETING", "LEVEL", "text", "AI_HUB_WORKFLOW_RUN_ID")},
    "version": open("VERSION").read().strip(),
}
with open("/tmp/workflow_space/echo/report.json", "w") as f:
    json.dump(report, f)
print(json.dumps(report))
"""

ECHO_INTERFACE: dict[str, Any] = {
    "inputs": [{"name": "text"}, {"name": "count"}],
    "outputs": [{"name": "report", "path": "/tmp/workflow_space/echo/report.json", "type": "text"}],
}


def echo_repo(make_repo: MakeRepo) -> GitRepo:
    repo = make_repo(None)
    repo.write(
        "Dockerfile", 'FROM python:3.11-slim\nWORKDIR /srv\nCOPY . .\nENTRYPOINT ["python3", "main.py"]\n'
    )
    repo.write("README.md", "# echo\n\nReports its argv and env.\n")
    repo.write("main.py", ECHO_MAIN)
    repo.write("VERSION", "1")
    repo.commit("echo module")
    return repo


def hash_workflow(name: str = "checksums", **checksum: Any) -> dict[str, Any]:
    """prepare (plain) writes a file from a param; checksum (module hash-file) hashes it."""
    return {
        "name": name,
        "params": [{"name": "content", "default": DATA}],
        "nodes": [
            {
                "name": "prepare",
                "command": 'printf "%s" "$content" > /tmp/workflow_space/data.txt',
                "inputs": [{"name": "content", "from": "params.content"}],
                "outputs": [{"name": "data", "path": "/tmp/workflow_space/data.txt", "type": "path"}],
            },
            {
                "name": "checksum",
                "module": "hash-file",
                "inputs": [
                    {"name": "input_file", "from": "prepare.data"},
                    {"name": "algorithm", "value": "sha256"},
                ],
                **checksum,
            },
        ],
    }


async def run_version(rt: Runtime, user: User, version_id: int, **kwargs: Any) -> int:
    run = await create_run(rt.bus, user, version_id, **kwargs)
    run = await wait_for_run(rt, run.id)
    if run.status is not RunStatus.SUCCEEDED:
        logs = {n.name: await node_log(rt, run.id, n.name) for n in await NodeRun.filter(run_id=run.id)}
        pytest.fail(f"run {run.id} {run.status.value}: {run.message}; logs: {logs}")
    return run.id


async def node(run_id: int, name: str) -> NodeRun:
    return await NodeRun.get(run_id=run_id, name=name)


async def test_a_module_node_runs_its_entrypoint_with_argv_env_and_outputs(
    rt: Runtime, user: User, make_repo: MakeRepo
) -> None:
    """Hazard: nodes have a private /tmp, and the test data dir is under /tmp: the build's directory must be
    mounted into the node, or the entrypoint is not found."""
    module = await register(
        rt.builds,
        user,
        echo_repo(make_repo),
        name="echo",
        interface=ECHO_INTERFACE,
        env={"GREETING": "hi", "LEVEL": 1},
    )
    build = await newest_build(module)
    evil = "$(touch /tmp/pwned); `id`"
    version = await create_workflow(
        user,
        {
            "name": "echo-wf",
            "params": [{"name": "p"}],
            "nodes": [
                {
                    "name": "e",
                    "module": "echo",
                    "env": {"LEVEL": "2"},
                    "inputs": [{"name": "text", "from": "params.p"}, {"name": "count", "value": 3}],
                }
            ],
        },
    )
    assert version.pinned_builds == {"e": build.id}
    run_id = await run_version(rt, user, version.id, params={"p": evil})
    e = await node(run_id, "e")
    report = json.loads(e.outputs["report"]["value"])
    assert report["argv"] == [f"--text={evil}", "--count=3"]
    # the local build lives in the data dir, which nodes cannot see: it is shown at /opt/aihub/module-build
    assert report["cwd"] == "/opt/aihub/module-build" + build.workdir.removeprefix(build.context_path)
    assert report["env"] == {
        "GREETING": "hi",
        "LEVEL": "2",
        "text": evil,
        "AI_HUB_WORKFLOW_RUN_ID": str(run_id),
    }
    assert report["version"] == "1"
    log = await node_log(rt, run_id, "e")
    assert log.strip().splitlines() == [json.dumps(report)], log


async def test_a_module_hashes_an_upstream_artifact(rt: Runtime, user: User, make_repo: MakeRepo) -> None:
    await register(rt.builds, user, make_repo("hash-file"))
    version = await create_workflow(user, hash_workflow())
    run_id = await run_version(rt, user, version.id)
    checksum = await node(run_id, "checksum")
    assert checksum.outputs["digest"]["value"] == hashlib.sha256(DATA.encode()).hexdigest()
    assert checksum.inputs == {"input_file": "/tmp/workflow_space/data.txt", "algorithm": "sha256"}
    assert checksum.cache_key is not None and checksum.cache_source_id is None


async def test_a_rerun_with_the_same_inputs_is_a_cache_hit(
    rt: Runtime, user: User, make_repo: MakeRepo
) -> None:
    await register(rt.builds, user, make_repo("hash-file"))
    version = await create_workflow(user, hash_workflow())
    first = await run_version(rt, user, version.id)
    second = await run_version(rt, user, version.id)
    source, hit = await node(first, "checksum"), await node(second, "checksum")
    assert hit.status is NodeStatus.SKIPPED
    assert hit.cache_source_id == source.id
    assert hit.cache_key == source.cache_key
    assert hit.outputs == source.outputs
    assert f"cache hit: outputs of run {first} node checksum" in hit.message
    assert await Attempt.filter(node_run_id=hit.id).count() == 0  # the module did not run
    prepare = await node(second, "prepare")  # plain nodes are never cached
    assert prepare.status is NodeStatus.SUCCEEDED and prepare.cache_key is None
    assert await Attempt.filter(node_run_id=prepare.id).count() == 1
    # different inputs (another file content, hence another artifact digest): the module runs
    third = await run_version(rt, user, version.id, params={"content": "other"})
    miss = await node(third, "checksum")
    assert miss.status is NodeStatus.SUCCEEDED and miss.cache_source_id is None
    assert miss.outputs["digest"]["value"] == hashlib.sha256(b"other").hexdigest()


async def test_caching_can_be_turned_off_per_run_and_per_node(
    rt: Runtime, user: User, make_repo: MakeRepo
) -> None:
    await register(rt.builds, user, make_repo("hash-file"))
    cached = await create_workflow(user, hash_workflow())
    uncached = await create_workflow(user, hash_workflow("no-cache", cache=False))
    first = await run_version(rt, user, cached.id, use_cache=False)
    assert (await node(first, "checksum")).status is NodeStatus.SUCCEEDED
    # a run that did not use the cache still records its key, so later runs can reuse its result
    hit = await run_version(rt, user, cached.id)
    assert (await node(hit, "checksum")).cache_source_id == (await node(first, "checksum")).id
    # opting out per run, and per node, runs the module although a result exists
    per_run = await run_version(rt, user, cached.id, use_cache=False)
    assert (await node(per_run, "checksum")).status is NodeStatus.SUCCEEDED
    per_node = await run_version(rt, user, uncached.id)
    assert (await node(per_node, "checksum")).status is NodeStatus.SUCCEEDED
    assert (await node(per_node, "checksum")).cache_source_id is None


async def test_node_env_is_part_of_the_cache_key(rt: Runtime, user: User, make_repo: MakeRepo) -> None:
    """Hazard: a module's output may depend on its env (SPEC's determinism contract counts env as input);
    a run with a different node env must not reuse outputs computed with another."""
    await register(
        rt.builds, user, echo_repo(make_repo), name="echo", interface=ECHO_INTERFACE, env={"GREETING": "hi"}
    )

    def wf(level: str) -> dict[str, Any]:
        return {
            "name": f"echo-{level}",
            "nodes": [
                {
                    "name": "e",
                    "module": "echo",
                    "env": {"LEVEL": level},
                    "inputs": [{"name": "text", "value": "t"}, {"name": "count", "value": 1}],
                }
            ],
        }

    one = await run_version(rt, user, (await create_workflow(user, wf("1"))).id)
    two = await run_version(rt, user, (await create_workflow(user, wf("2"))).id)
    assert (await node(two, "e")).status is NodeStatus.SUCCEEDED
    assert json.loads((await node(two, "e")).outputs["report"]["value"])["env"]["LEVEL"] == "2"
    again = await run_version(rt, user, (await create_workflow(user, wf("1") | {"name": "echo-1b"})).id)
    assert (await node(again, "e")).cache_source_id == (await node(one, "e")).id


async def test_workflows_keep_the_build_they_pinned(rt: Runtime, user: User, make_repo: MakeRepo) -> None:
    repo = echo_repo(make_repo)
    module = await register(rt.builds, user, repo, name="echo", interface=ECHO_INTERFACE)
    spec = {
        "name": "pinned",
        "nodes": [
            {
                "name": "e",
                "module": "echo",
                "inputs": [{"name": "text", "value": "x"}, {"name": "count", "value": 1}],
            }
        ],
    }
    v1 = await create_workflow(user, spec)
    repo.write("VERSION", "2")
    repo.commit("v2")
    await update_module(rt.builds, user, module.id, description="second version")
    second = await newest_build(module)
    await rt.builds.wait(second.id)
    v2 = await create_version(user, v1.workflow_id, spec)  # type: ignore[attr-defined]
    assert v1.pinned_builds != v2.pinned_builds
    assert v2.pinned_builds == {"e": second.id}
    old = await run_version(rt, user, v1.id, use_cache=False)
    new = await run_version(rt, user, v2.id)
    assert json.loads((await node(old, "e")).outputs["report"]["value"])["version"] == "1"
    assert json.loads((await node(new, "e")).outputs["report"]["value"])["version"] == "2"
    # same inputs, another build: no cache hit across builds
    assert (await node(new, "e")).status is NodeStatus.SUCCEEDED


async def test_an_unpublished_module_is_usable_only_by_its_owner(
    rt: Runtime, user: User, make_repo: MakeRepo
) -> None:
    module = await register(rt.builds, user, make_repo("hash-file"))
    bob = await make_user("bob")
    with pytest.raises(InvalidInput, match="unknown module 'hash-file'"):
        await create_workflow(bob, hash_workflow())
    await ModuleBuild.filter(module_id=module.id).update(published=True)
    version = await create_workflow(bob, hash_workflow())
    run_id = await run_version(rt, bob, version.id)
    assert (await node(run_id, "checksum")).outputs["digest"]["value"] == hashlib.sha256(
        DATA.encode()
    ).hexdigest()
