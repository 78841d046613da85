"""The module registry: validation of every field, builds from real git repositories, logs, edits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from aihub.db.models import BuildStatus, Category, Module, ModuleBuild, ModuleStatus
from aihub.engine.builds import BuildManager
from aihub.services.errors import Forbidden, InvalidInput, NotFound
from aihub.services.modules import (
    DbBuildStore,
    builds_of,
    create_module,
    get_build,
    get_module,
    get_module_by_name,
    list_modules,
    module_palette,
    read_build_log,
    rebuild_module,
    update_module,
    view_module,
)
from aihub.settings import Settings
from tests.modules.conftest import (
    CSV_STATS_INTERFACE,
    HASH_FILE_INTERFACE,
    MakeRepo,
    make_user,
    newest_build,
    register,
)


async def test_a_module_builds_from_a_real_repository(builds: BuildManager, make_repo: MakeRepo) -> None:
    alice = await make_user("alice")
    repo = make_repo("hash-file")
    sha = repo.git("rev-parse", "HEAD")
    module = await register(builds, alice, repo, description="hashes a file")
    assert module.status is ModuleStatus.BUILT
    build = await newest_build(module)
    assert build.status is BuildStatus.BUILT, build.message
    assert build.number == 1
    assert build.commit_sha == sha
    assert build.image == f"{builds.settings.registry}/data-processing/hash-file:{sha}"
    assert build.entrypoint == ["python3", "main.py"]
    kept = builds.settings.data_dir / "builds" / "hash-file" / str(build.id)
    assert build.context_path == str(kept)
    assert build.workdir == str(kept / "app")
    assert (kept / "app" / "main.py").read_text() == (repo.path / "main.py").read_text()
    assert not (kept / "app" / ".git").exists()
    assert build.readme.startswith("# hash-file")
    assert build.snapshot["inputs"] == [
        {"name": "input_file", "description": "path of the file to hash"},
        {"name": "algorithm", "description": "hashlib algorithm"},
    ]
    assert build.snapshot["outputs"][0]["path"] == "/tmp/workflow_space/hash-file/digest.txt"
    # the build workspace (the clone) is gone; only the kept "image" directory and the log remain
    assert list((builds.settings.data_dir / "builds" / ".work").iterdir()) == []
    log = await read_build_log(builds, alice, build.id)
    assert "git clone --depth 1 --no-recurse-submodules --branch main --" in log
    assert f"commit {sha}" in log
    assert "build succeeded" in log


async def test_copy_of_a_sub_directory_maps_an_absolute_entrypoint(
    builds: BuildManager, make_repo: MakeRepo
) -> None:
    """csv-stats copies only src/ to /opt/csv-stats and starts /opt/csv-stats/main.py."""
    alice = await make_user("alice")
    repo = make_repo("csv-stats", into="modules/csv_stats")
    module = await register(
        builds,
        alice,
        repo,
        name="csv-stats",
        interface=CSV_STATS_INTERFACE,
        dockerfile_path="modules/csv_stats/Dockerfile",
        build_context="/modules/csv_stats",  # the seed writes build directories like this
        readme_path="modules/csv_stats/README.md",
    )
    build = await newest_build(module)
    assert build.status is BuildStatus.BUILT, build.message
    root = Path(build.context_path)
    assert build.workdir == str(root / "opt" / "csv-stats")
    assert build.entrypoint == ["python3", str(root / "opt" / "csv-stats" / "main.py")]
    assert sorted(p.name for p in (root / "opt" / "csv-stats").iterdir()) == ["main.py"]
    assert "RUN" not in await read_build_log(builds, alice, build.id)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"dockerfile_path": "nope/Dockerfile"},
            "the Dockerfile 'nope/Dockerfile' does not exist in the repository",
        ),
        ({"readme_path": "docs/README.md"}, "the README 'docs/README.md' does not exist in the repository"),
        ({"ref": "no-such-branch"}, "git clone of file://"),
        ({"build_context": "missing"}, "the build context 'missing' is not a directory of the repository"),
    ],
)
async def test_a_build_fails_with_a_message_the_author_understands(
    builds: BuildManager, make_repo: MakeRepo, change: dict[str, str], message: str
) -> None:
    alice = await make_user("alice")
    module = await register(builds, alice, make_repo("hash-file"), **change)
    assert module.status is ModuleStatus.BUILD_FAILED
    build = await newest_build(module)
    assert build.status is BuildStatus.BUILD_FAILED
    assert message in build.message
    assert f"build failed: {build.message}" in await read_build_log(builds, alice, build.id)
    assert not (builds.settings.data_dir / "builds" / "hash-file" / str(build.id)).exists()
    assert list((builds.settings.data_dir / "builds" / ".work").iterdir()) == []


async def test_a_missing_branch_names_the_ref(builds: BuildManager, make_repo: MakeRepo) -> None:
    alice = await make_user("alice")
    module = await register(builds, alice, make_repo("hash-file"), ref="release-9")
    build = await newest_build(module)
    assert "at 'release-9' failed" in build.message
    assert "release-9" in build.message and "not found" in build.message


@pytest.mark.parametrize(
    ("dockerfile", "message"),
    [
        ('FROM python:3.11-slim\nCOPY . /app\nCMD ["python3", "main.py"]\n', "CMD is not allowed"),
        ("FROM python:3.11-slim\nENTRYPOINT python3 main.py\n", "must use the exec form"),
        ("FROM python:3.11-slim\nWORKDIR /app\n", "has no ENTRYPOINT"),
        (
            'FROM python:3.11-slim\nENTRYPOINT ["python3", "main.py"]\nCMD ["--x=1"]\n',
            "line 3: CMD is not allowed",
        ),
        (
            'FROM python:3.11-slim\nCOPY nothing-here /app\nENTRYPOINT ["python3"]\n',
            "does not exist in the build",
        ),
        ('FROM python:3.11-slim\nCOPY ../x /app\nENTRYPOINT ["python3"]\n', "outside the build context"),
    ],
)
async def test_dockerfile_rules_end_in_build_failed(
    builds: BuildManager, make_repo: MakeRepo, dockerfile: str, message: str
) -> None:
    alice = await make_user("alice")
    repo = make_repo("hash-file")
    repo.write("Dockerfile", dockerfile)
    repo.commit("break the Dockerfile")
    module = await register(builds, alice, repo)
    build = await newest_build(module)
    assert module.status is ModuleStatus.BUILD_FAILED
    assert message in build.message


async def test_a_dockerfile_symlink_leaving_the_repository_is_refused(
    builds: BuildManager, make_repo: MakeRepo, tmp_path: Path
) -> None:
    outside = tmp_path / "outside-Dockerfile"
    outside.write_text('FROM x\nENTRYPOINT ["python3", "main.py"]\n')
    repo = make_repo("hash-file")
    (repo.path / "Dockerfile").unlink()
    os.symlink(outside, repo.path / "Dockerfile")
    repo.commit("link")
    module = await register(builds, await make_user("alice"), repo)
    build = await newest_build(module)
    assert build.status is BuildStatus.BUILD_FAILED
    assert "leads outside the repository" in build.message


async def test_editing_builds_a_new_version_and_keeps_the_old(
    builds: BuildManager, make_repo: MakeRepo
) -> None:
    alice = await make_user("alice")
    repo = make_repo("hash-file")
    module = await register(builds, alice, repo)
    first = await newest_build(module)
    repo.write("main.py", (repo.path / "main.py").read_text().replace("= {digest}", "=> {digest}"))
    second_sha = repo.commit("v2")
    module = await update_module(builds, alice, module.id, description="v2", env={"LEVEL": 3})
    assert module.status is ModuleStatus.BUILDING
    second = await newest_build(module)
    await builds.wait(second.id)
    await second.refresh_from_db()
    await module.refresh_from_db()
    assert (second.number, second.status, second.commit_sha) == (2, BuildStatus.BUILT, second_sha)
    assert module.status is ModuleStatus.BUILT
    assert second.snapshot["env"] == {"LEVEL": "3"} and second.snapshot["description"] == "v2"
    await first.refresh_from_db()
    assert first.status is BuildStatus.BUILT and first.snapshot["env"] == {}
    assert "=>" not in (Path(first.workdir) / "main.py").read_text()
    assert "=>" in (Path(second.workdir) / "main.py").read_text()
    rebuilt = await rebuild_module(builds, alice, module.id)
    await builds.wait(rebuilt.id)
    await rebuilt.refresh_from_db()
    assert (rebuilt.number, rebuilt.status, rebuilt.commit_sha) == (3, BuildStatus.BUILT, second_sha)
    assert [b.number for b in await builds_of(alice, module.id)] == [3, 2, 1]


async def test_only_the_owner_or_an_admin_edits(builds: BuildManager, make_repo: MakeRepo) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    admin = await make_user("root", is_admin=True)
    module = await register(builds, alice, make_repo("hash-file"))
    with pytest.raises(NotFound):  # bob cannot even see an unpublished module
        await update_module(builds, bob, module.id, description="mine now")
    with pytest.raises(NotFound):
        await rebuild_module(builds, bob, module.id)
    await ModuleBuild.filter(module_id=module.id).update(published=True)
    with pytest.raises(Forbidden, match="only the owner"):
        await update_module(builds, bob, module.id, description="mine now")
    edited = await update_module(builds, admin, module.id, description="fixed by admin")
    assert edited.description == "fixed by admin"


async def test_the_name_cannot_change(builds: BuildManager, make_repo: MakeRepo) -> None:
    alice = await make_user("alice")
    module = await register(builds, alice, make_repo("hash-file"))
    with pytest.raises(InvalidInput, match="name cannot change") as err:
        await update_module(builds, alice, module.id, name="other")
    assert err.value.field == "name"
    with pytest.raises(InvalidInput, match="unknown module field"):
        await update_module(builds, alice, module.id, colour="red")


async def test_build_logs_and_builds_are_private_until_published(
    builds: BuildManager, make_repo: MakeRepo
) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    module = await register(builds, alice, make_repo("hash-file"))
    build = await newest_build(module)
    with pytest.raises(NotFound):
        await read_build_log(builds, bob, build.id)
    with pytest.raises(NotFound):
        await get_build(bob, build.id)
    with pytest.raises(NotFound):
        await get_module(bob, module.id)
    assert [m.name for m in await list_modules(bob)] == []
    assert [m.name for m in await list_modules(alice, mine=True)] == ["hash-file"]
    await ModuleBuild.filter(id=build.id).update(published=True)
    assert (await get_build(bob, build.id)).id == build.id
    assert [m.name for m in await list_modules(bob)] == ["hash-file"]
    assert [b.id for b in await builds_of(bob, module.id)] == [build.id]


async def test_others_see_the_published_snapshot_not_unpublished_edits(
    builds: BuildManager, make_repo: MakeRepo
) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    repo = make_repo("hash-file")
    module = await register(builds, alice, repo, description="v1")
    first = await newest_build(module)
    await ModuleBuild.filter(id=first.id).update(published=True)
    await Module.filter(id=module.id).update(status=ModuleStatus.PUBLISHED)
    module = await update_module(builds, alice, module.id, description="v2 <b>draft</b>")
    await builds.wait((await newest_build(module)).id)
    seen_by_bob = await view_module(bob, await get_module(bob, module.id))
    assert (seen_by_bob.description, seen_by_bob.status, seen_by_bob.build.id) == (  # type: ignore[union-attr]
        "v1",
        ModuleStatus.PUBLISHED,
        first.id,
    )
    assert not seen_by_bob.can_edit
    assert "<h1>hash-file</h1>" in seen_by_bob.readme_html
    seen_by_alice = await view_module(alice, await get_module(alice, module.id))
    assert (seen_by_alice.description, seen_by_alice.status) == ("v2 <b>draft</b>", ModuleStatus.BUILT)


async def test_an_interrupted_build_runs_again_on_start(db: Settings, make_repo: MakeRepo) -> None:
    alice = await make_user("alice")
    idle = BuildManager(db, DbBuildStore())  # not started: nothing runs, the build stays BUILDING
    module = await register(idle, alice, make_repo("hash-file"), wait=False)
    build = await newest_build(module)
    assert build.status is BuildStatus.BUILDING
    manager = BuildManager(db, DbBuildStore())
    await manager.start()
    try:
        await manager.wait(build.id)
    finally:
        await manager.close()
    await build.refresh_from_db()
    assert build.status is BuildStatus.BUILT, build.message


# ------------------------------------------------------------------------------------------------ validation

VALID: dict[str, Any] = {
    "category": "data-processing",
    "name": "hash-file",
    "git_url": "https://git.example.com/group/hash-file.git",
    "ref": "main",
    **HASH_FILE_INTERFACE,
}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"name": "Hash_File"}, "name", "not a valid module name"),
        ({"name": ""}, "name", "not a valid module name"),
        ({"name": "x" * 64}, "name", "longer than 63"),
        ({"category": "nope"}, "category", "unknown category 'nope' (categories: data-processing)"),
        ({"git_url": "-uupload-pack=touch /tmp/x"}, "gitUrl", "must not start with '-'"),
        ({"git_url": "ext::sh -c touch% /tmp/pwned"}, "gitUrl", "must not contain spaces"),
        ({"git_url": "ext::sh"}, "gitUrl", "is not a URL git may clone here"),
        ({"git_url": "git@host:group/repo.git"}, "gitUrl", "ssh://git@host/group/repo.git instead"),
        ({"git_url": "ftp://host/repo.git"}, "gitUrl", "scheme 'ftp' is not allowed"),
        ({"git_url": "https:///repo.git"}, "gitUrl", "has no host"),
        ({"git_url": ""}, "gitUrl", "the git URL is empty"),
        ({"ref": "-b"}, "ref", "must not start with '-'"),
        ({"ref": "a..b"}, "ref", "not a valid branch or tag name"),
        ({"ref": "has space"}, "ref", "not a valid branch or tag name"),
        ({"dockerfile_path": "/etc/Dockerfile"}, "dockerfilePath", "must be relative to the repository root"),
        ({"dockerfile_path": "../Dockerfile"}, "dockerfilePath", "leads outside the repository"),
        ({"dockerfile_path": "a/../../Dockerfile"}, "dockerfilePath", "leads outside the repository"),
        ({"readme_path": "../../README.md"}, "readmePath", "leads outside the repository"),
        ({"readme_path": ""}, "readmePath", "is empty"),
        ({"build_context": "../.."}, "buildContext", "leads outside the repository"),
        ({"env": {"AI_HUB_TOKEN": "x"}}, "env.AI_HUB_TOKEN", "set by the platform"),
        ({"env": {"1BAD": "x"}}, "env.1BAD", "not a valid name"),
        ({"env": {"OK": {"nested": 1}}}, "env.OK", "must be a string, number or boolean"),
        ({"env": ["A=1"]}, "env", "must be a mapping"),
        (
            {"inputs": [{"name": "a"}, {"name": "a", "description": "again"}]},
            "inputs[1].name",
            "duplicate input name 'a'",
        ),
        ({"inputs": [{"name": "bad-name"}]}, "inputs[0].name", "not a valid name"),
        ({"inputs": [{"name": "a", "typo": 1}]}, "inputs[0]", "unknown field(s) typo"),
        ({"inputs": "a,b"}, "inputs", "must be a list"),
        ({"inputs": ["a"]}, "inputs[0]", "must be a mapping"),
        ({"inputs": [{"name": f"i{n}"} for n in range(101)]}, "inputs", "more than 100 entries"),
        ({"env": {f"V{n}": "x" for n in range(101)}}, "env", "more than 100 variables"),
        ({"description": 5}, "description", "must be a string"),
        ({"description": "x" * 10_001}, "description", "longer than 10000 characters"),
        ({"readme_path": "a\0b"}, "readmePath", "must not contain a NUL character"),
        ({"dockerfile_path": "."}, "dockerfilePath", "is the repository itself, not a file"),
        (
            {"outputs": [{"name": "o", "path": "/tmp/o", "type": "file"}]},
            "outputs[0].type",
            "type must be 'text' or 'path' (got 'file')",
        ),
        (
            {"outputs": [{"name": "o", "path": "out.txt", "type": "text"}]},
            "outputs[0].path",
            "must be an absolute path",
        ),
        ({"outputs": [{"name": "o", "type": "text"}]}, "outputs[0].path", "Field required"),
        (
            {
                "outputs": [
                    {"name": "o", "path": "/a", "type": "text"},
                    {"name": "o", "path": "/b", "type": "path"},
                ]
            },
            "outputs[1].name",
            "duplicate output name 'o'",
        ),
    ],
)
async def test_each_bad_field_gives_a_clear_error(
    builds: BuildManager, category: Category, change: dict[str, Any], field: str, message: str
) -> None:
    alice = await make_user("alice")
    with pytest.raises(InvalidInput) as err:
        await create_module(builds, alice, **{**VALID, **change})
    assert message in err.value.message
    assert err.value.field == field
    assert await Module.all().count() == 0


async def test_file_urls_need_the_admin_setting(builds: BuildManager, category: Category) -> None:
    builds.settings.allow_file_git = False
    with pytest.raises(InvalidInput, match="AIHUB_ALLOW_FILE_GIT") as err:
        await create_module(builds, await make_user("alice"), **{**VALID, "git_url": "file:///srv/repo"})
    assert err.value.field == "gitUrl"


async def test_all_problems_are_reported_at_once(builds: BuildManager, category: Category) -> None:
    with pytest.raises(InvalidInput) as err:
        await create_module(
            builds, await make_user("alice"), **{**VALID, "name": "BAD", "ref": "-x", "readme_path": "/abs"}
        )
    lines = err.value.message.splitlines()
    assert [line.split(":")[0] for line in lines] == ["name", "ref", "readmePath"]


async def test_the_name_is_unique(builds: BuildManager, make_repo: MakeRepo) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    await register(builds, alice, make_repo("hash-file"), wait=False)
    with pytest.raises(InvalidInput, match="a module named 'hash-file' already exists") as err:
        await register(builds, bob, make_repo("hash-file"), wait=False)
    assert err.value.field == "name"


async def test_edits_are_validated_like_creation(builds: BuildManager, make_repo: MakeRepo) -> None:
    alice = await make_user("alice")
    module = await register(builds, alice, make_repo("hash-file"))
    with pytest.raises(InvalidInput, match="leads outside the repository") as err:
        await update_module(builds, alice, module.id, readme_path="../x.md")
    assert err.value.field == "readmePath"
    assert await ModuleBuild.filter(module_id=module.id).count() == 1


async def test_an_unexpected_error_ends_the_build_too(builds: BuildManager, make_repo: MakeRepo) -> None:
    """Hazard: a crash inside a build (here the kept directory cannot be created) must not leave the module
    BUILDING for ever."""
    (builds.settings.data_dir / "builds").mkdir(parents=True, exist_ok=True)
    (builds.settings.data_dir / "builds" / "hash-file").write_text("a file where a directory should be")
    module = await register(builds, await make_user("alice"), make_repo("hash-file"))
    build = await newest_build(module)
    assert module.status is ModuleStatus.BUILD_FAILED
    assert build.message.startswith("internal error: ")


async def test_modules_by_name_and_the_palette(builds: BuildManager, make_repo: MakeRepo) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    module = await register(builds, alice, make_repo("hash-file"))
    assert (await get_module_by_name(alice, "hash-file")).id == module.id
    with pytest.raises(NotFound, match="module 'hash-file' not found"):
        await get_module_by_name(bob, "hash-file")
    assert [(e.group, e.module.name) for e in await module_palette(alice)] == [("mine", "hash-file")]
    assert await module_palette(bob) == []
    await ModuleBuild.filter(module_id=module.id).update(published=True)
    assert [(e.group, e.module.name) for e in await module_palette(bob)] == [("data-processing", "hash-file")]
