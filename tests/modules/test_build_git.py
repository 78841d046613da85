"""Fetching module sources: URL/ref checks and the real shallow clone, with its timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aihub.engine.builds.git import GitError, check_git_url, check_ref, clone, redact_url
from tests.modules.conftest import MakeRepo


@pytest.mark.parametrize(
    "url",
    [
        "https://git.example.com/group/repo.git",
        "http://192.168.70.8/aisdp/data_service/pipeline_demo",
        "ssh://git@git.example.com:2222/group/repo.git",
        "HTTPS://git.example.com/x",
    ],
)
def test_allowed_urls(url: str) -> None:
    # the seed's internal GitLab is reached once an administrator allows it (AIHUB_GIT_ALLOWED_HOSTS)
    assert check_git_url(f"  {url} ", allow_file=False, allowed_hosts=["192.168.70.8"]) == url


@pytest.mark.parametrize(
    ("url", "allow_file", "message"),
    [
        ("--upload-pack=touch /tmp/pwned", False, "must not start with '-'"),
        ("-c", True, "must not start with '-'"),
        ("ext::sh -c touch% /tmp/pwned", True, "must not contain spaces or control characters"),
        ("ext::sh", True, "is not a URL git may clone here"),
        ("fd::3", True, "is not a URL git may clone here"),
        ("/srv/git/repo", True, "is not a URL git may clone here"),
        (
            "git@github.com:org/repo.git",
            False,
            "ssh://git@host/group/repo.git instead of git@host:group/repo.git",
        ),
        ("git://git.example.com/repo", False, "scheme 'git' is not allowed; use one of: https, http, ssh"),
        ("file:///srv/git/repo", False, "file:// repositories are disabled on this installation"),
        ("file://relative/repo", True, "a file:// URL needs an absolute path"),
        ("https://", False, "has no host"),
        ("https://host/a\nb", False, "must not contain spaces or control characters"),
        ("", False, "the git URL is empty"),
    ],
)
def test_refused_urls(url: str, allow_file: bool, message: str) -> None:
    with pytest.raises(GitError) as err:
        check_git_url(url, allow_file=allow_file)
    assert message in str(err.value)


def test_file_urls_when_allowed() -> None:
    assert check_git_url("file:///srv/git/repo", allow_file=True) == "file:///srv/git/repo"


@pytest.mark.parametrize("ref", ["main", "v1.2.3", "feature/x-y", "lyy-demo", "release_2024+hotfix"])
def test_valid_refs(ref: str) -> None:
    assert check_ref(ref) == ref


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("-b", "must not start with '-'"),
        ("--upload-pack=x", "must not start with '-'"),
        ("", "is empty"),
        ("a..b", "not a valid branch or tag name"),
        ("a b", "not a valid branch or tag name"),
        ("a~1", "not a valid branch or tag name"),
        ("HEAD@{1}", "not a valid branch or tag name"),
        ("x.lock", "not a valid branch or tag name"),
        ("/abs", "not a valid branch or tag name"),
        ("a" * 256, "not a valid branch or tag name"),
    ],
)
def test_invalid_refs(ref: str, message: str) -> None:
    with pytest.raises(GitError, match=message):
        check_ref(ref)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:secret@host/repo.git", "https://***@host/repo.git"),
        ("https://ghp_token@host:8443/repo.git", "https://***@host:8443/repo.git"),
        ("https://host/repo.git", "https://host/repo.git"),
        ("ssh://git@host/repo.git", "ssh://git@host/repo.git"),
    ],
)
def test_credentials_are_redacted(url: str, shown: str) -> None:
    assert redact_url(url) == shown


async def test_a_shallow_clone_at_a_tag_without_submodules(make_repo: MakeRepo, tmp_path: Path) -> None:
    inner = make_repo("csv-stats")
    repo = make_repo("hash-file")
    repo.git("-c", "protocol.file.allow=always", "submodule", "add", "-q", inner.url, "vendor/csv")
    first = repo.commit("with a submodule")
    repo.git("tag", "v1")
    repo.write("later.txt", "after the tag")
    repo.commit("after the tag")
    lines: list[str] = []
    dest = tmp_path / "checkout"
    sha = await clone(repo.url, "v1", dest, allow_file=True, time_limit=60, log=lines.append)
    assert sha == first
    assert not (dest / "later.txt").exists()
    assert (dest / "vendor" / "csv").is_dir() and not any((dest / "vendor" / "csv").iterdir())
    count = await asyncio.create_subprocess_exec(
        "git", "rev-list", "--count", "HEAD", cwd=dest, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await count.communicate()
    assert out.decode().strip() == "1"  # shallow
    assert lines[0].startswith("$ git clone --depth 1 --no-recurse-submodules --branch v1 -- file://")
    assert lines[-1] == f"commit {first}"


async def test_clone_checks_the_url_itself(tmp_path: Path, make_repo: MakeRepo) -> None:
    repo = make_repo("hash-file")
    with pytest.raises(GitError, match="file:// repositories are disabled"):
        await clone(repo.url, "main", tmp_path / "c", allow_file=False, time_limit=60, log=print)
    with pytest.raises(GitError, match="must not start with '-'"):
        await clone(
            repo.url, "--upload-pack=touch x", tmp_path / "c", allow_file=True, time_limit=60, log=print
        )
    assert not (tmp_path / "c").exists()


async def test_a_missing_repository_fails_with_gits_reason(tmp_path: Path) -> None:
    missing = (tmp_path / "nothing-here").as_uri()
    with pytest.raises(
        GitError, match=r"git clone of file://.*nothing-here at 'main' failed \(exit code 128\): "
    ):
        await clone(missing, "main", tmp_path / "c", allow_file=True, time_limit=60, log=lambda _: None)


@pytest.fixture
async def silent_server() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """An HTTP "server" that accepts connections and never answers; the event is set on a connection."""
    connected = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        connected.set()
        await reader.read()  # until the client goes away

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, connected
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_hanging_clone_is_stopped_after_the_time_limit(
    silent_server: tuple[int, asyncio.Event], tmp_path: Path
) -> None:
    port, connected = silent_server
    url = f"http://user:secret@127.0.0.1:{port}/group/repo.git"
    lines: list[str] = []
    with pytest.raises(GitError) as err:
        await clone(
            url,
            "main",
            tmp_path / "c",
            allow_file=False,
            time_limit=2,
            log=lines.append,
            allowed_hosts=["127.0.0.1"],
        )
    assert connected.is_set()  # git really talked to the server and was waiting for it
    assert (
        str(err.value)
        == f"cloning http://***@127.0.0.1:{port}/group/repo.git took longer than 2 seconds and was stopped"
    )
    assert "secret" not in "\n".join(lines)
