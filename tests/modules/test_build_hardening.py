"""Module builds (issue 11, point 9): no SSRF through the git URL, no CMD hidden from the "no CMD" rule, no
README out of .git/, and no credentials of a git URL on show."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from aihub.db.models import BuildStatus, Category, Module
from aihub.engine.builds import BuildManager
from aihub.engine.builds.dockerfile import DockerfileError, parse_dockerfile
from aihub.engine.builds.git import GitError, check_git_url, clone
from aihub.services.errors import InvalidInput
from aihub.services.modules import create_module, update_module, view_module
from tests.modules.conftest import HASH_FILE_INTERFACE, MakeRepo, make_user, newest_build, register

# ------------------------------------------------------------------------------------------------ SSRF


class Listener:
    """A TCP port on this host that counts the connections it gets (what an SSRF would reach)."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Listener:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.close()

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    async with Listener() as port:
        yield port


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:22/x.git",
        "https://localhost/x.git",
        "http://[::1]:8000/x.git",
        "http://[::ffff:127.0.0.1]/x.git",
        "https://10.1.2.3/x.git",
        "https://192.168.0.10/x.git",
        "http://169.254.169.254/latest/meta-data",
        "https://100.64.0.1/x.git",
        "ssh://git@172.16.0.5/x.git",
        "http://0.0.0.0:8000/x.git",
    ],
)
def test_internal_addresses_are_refused_when_saved(url: str) -> None:
    with pytest.raises(GitError, match=r"internal address .*AIHUB_GIT_ALLOWED_HOSTS"):
        check_git_url(url, allow_file=False)
    host = urlsplit(url).hostname or ""
    assert check_git_url(url, allow_file=False, allowed_hosts=[host]) == url  # an administrator's choice


async def _clone(url: str, tmp_path: Path, **options: Any) -> list[str]:
    log: list[str] = []
    await clone(url, "main", tmp_path / "dest", allow_file=False, time_limit=30, log=log.append, **options)
    return log


@pytest.mark.parametrize("host", ["localhost.", "0x7f000001", "2130706433", "127.1"])
async def test_names_are_resolved_and_refused_before_git_connects(
    host: str, listener: Listener, tmp_path: Path
) -> None:
    """The hazard: a module's git URL scanned the server's ports (the build log told open from closed)."""
    with pytest.raises(GitError, match="internal address"):
        await _clone(f"http://{host}:{listener.port}/repo.git", tmp_path)
    assert listener.connections == 0


async def test_an_allowed_internal_host_is_reached(listener: Listener, tmp_path: Path) -> None:
    with pytest.raises(GitError, match="git clone of"):  # not a git server: git fails, after connecting
        await _clone(f"http://localhost:{listener.port}/repo.git", tmp_path, allowed_hosts=["LOCALHOST"])
    assert listener.connections >= 1


async def test_a_redirect_is_not_followed(listener: Listener, tmp_path: Path) -> None:
    """An allowed (or public) server must not bounce git to an internal address."""

    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        target = f"http://127.0.0.1:{listener.port}/repo.git/info/refs?service=git-upload-pack"
        writer.write(f"HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    bouncer = await asyncio.start_server(redirect, "127.0.0.1", 0)
    port = bouncer.sockets[0].getsockname()[1]
    try:
        with pytest.raises(GitError):
            await _clone(f"http://localhost:{port}/repo.git", tmp_path, allowed_hosts=["localhost"])
    finally:
        bouncer.close()
        await bouncer.wait_closed()
    assert listener.connections == 0


async def test_a_module_naming_an_internal_host_is_refused(builds: BuildManager, category: Category) -> None:
    alice = await make_user("alice")
    values = {"category": "data-processing", "ref": "main", **HASH_FILE_INTERFACE}
    with pytest.raises(InvalidInput, match="internal address") as err:
        await create_module(builds, alice, name="scan", git_url="http://127.0.0.1:5432/x.git", **values)
    assert err.value.field == "gitUrl"


async def test_a_build_of_a_name_that_resolves_inside_fails_without_connecting(
    builds: BuildManager, category: Category, listener: Listener
) -> None:
    alice = await make_user("alice")
    values = {"category": "data-processing", "ref": "main", **HASH_FILE_INTERFACE}
    module = await create_module(
        builds, alice, name="scan", git_url=f"http://127.1:{listener.port}/x.git", **values
    )
    build = await newest_build(module)
    await builds.wait(build.id)
    build = await newest_build(module)
    assert build.status is BuildStatus.BUILD_FAILED
    assert "internal address" in build.message
    assert listener.connections == 0


# ------------------------------------------------------------------------------------------------ no CMD

GOOD = 'FROM python:3.11-slim\nENTRYPOINT ["python3", "main.py"]\n'


@pytest.mark.parametrize(
    "text",
    [
        GOOD + 'CMD\t["--x=1"]\n',
        GOOD + 'CMD\t \t["--x=1"]\n',
        GOOD + 'cmd ["--x=1"]\n',
        GOOD + 'C\\\nMD ["--x=1"]\n',
        GOOD + 'C\\  \nMD ["--x=1"]\n',
        GOOD + 'C\\\n# a comment in between\n\nMD ["--x=1"]\n',
        GOOD + "  CM\\\nD\\\n  echo\n",
        "# escape=`\n" + GOOD + 'C`\nMD ["--x=1"]\n',
        "# ESCAPE = `\n" + GOOD + 'CM`\t\nD ["--x=1"]\n',
    ],
    ids=[
        "tab",
        "tabs",
        "lower",
        "continued",
        "blanks-after-escape",
        "comment-inside",
        "shell",
        "escape",
        "escape2",
    ],
)
def test_cmd_is_found_however_it_is_spelled(text: str) -> None:
    """The hazard: ``CMD<tab>[...]`` and ``C\\<newline>MD`` passed the "no CMD" rule; BuildKit reads both
    as CMD."""
    with pytest.raises(DockerfileError, match="CMD is not allowed"):
        parse_dockerfile(text)


def test_blanks_and_continuations_elsewhere_still_parse() -> None:
    info = parse_dockerfile(
        'FROM python:3.11-slim\nWORKDIR\t/app\nCOPY \\\n  main.py \\\n  /app/\nENTRYPOINT\t["python3", \\\n "main.py"]\n'
    )
    assert info.entrypoint == ("python3", "main.py")
    assert info.workdir == "/app"
    assert [c.sources for c in info.copies] == [("main.py",)]
    # a backslash that is not the escape character is kept
    escaped = parse_dockerfile('# escape=`\nFROM x\nENTRYPOINT ["a\\\\b"]\n')
    assert escaped.entrypoint == ("a\\b",)


# ------------------------------------------------------------------------------------------------ README and .git


@pytest.mark.parametrize("path", [".git/config", "docs/../.git/config", ".GIT/HEAD", "sub/.git/config"])
async def test_the_readme_may_not_come_from_dot_git(
    builds: BuildManager, category: Category, path: str
) -> None:
    alice = await make_user("alice")
    values = {"category": "data-processing", "ref": "main", **HASH_FILE_INTERFACE}
    with pytest.raises(InvalidInput, match=r"points into \.git/") as err:
        await create_module(
            builds, alice, name="leak", git_url="https://git.example.com/x.git", readme_path=path, **values
        )
    assert err.value.field == "readmePath"


async def test_a_readme_linking_into_dot_git_fails_the_build(
    builds: BuildManager, make_repo: MakeRepo
) -> None:
    """The hazard: the README shown to reviewers could be git's config, with the remote's token in it."""
    repo = make_repo("hash-file")
    (repo.path / "README.md").unlink()
    (repo.path / "README.md").symlink_to(".git/config")
    repo.commit("readme is a link")
    module = await register(builds, await make_user("alice"), repo)
    build = await newest_build(module)
    assert build.status is BuildStatus.BUILD_FAILED
    assert "leads into .git/" in build.message
    assert not build.readme


# ------------------------------------------------------------------------------------------------ credentials


async def test_credentials_in_a_git_url_are_never_shown(builds: BuildManager, category: Category) -> None:
    alice = await make_user("alice")
    secret = "https://deploy:s3cr3t-t0ken@git.example.com/group/x.git"
    values = {"category": "data-processing", "ref": "main", **HASH_FILE_INTERFACE}
    module = await create_module(builds, alice, name="private", git_url=secret, **values)
    view = await view_module(alice, module)  # even the owner's own view
    assert "s3cr3t" not in view.git_url and view.git_url == "https://***@git.example.com/group/x.git"
    build = await newest_build(module)
    await builds.wait(build.id)
    log = builds.log_path(build.id).read_text()
    assert "s3cr3t" not in log and "***@git.example.com" in log
    # the masked URL sent back unchanged keeps the stored credentials; a new URL replaces them
    await update_module(builds, alice, module.id, git_url=view.git_url, description="edited")
    assert (await Module.get(id=module.id)).git_url == secret
    await update_module(builds, alice, module.id, git_url="https://git.example.com/group/y.git")
    assert (await Module.get(id=module.id)).git_url == "https://git.example.com/group/y.git"
