"""Content-addressed artifact store on local disk (aihub.storage.local.LocalArtifactStore)."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
from pathlib import Path

import pytest

from aihub.settings import Settings
from aihub.storage import LocalArtifactStore, LocalLogStore, build_storage


def _archive(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _stored_files(store: LocalArtifactStore) -> list[Path]:
    return sorted(p for p in store.root.rglob("*") if p.is_file())


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


async def test_put_path_exists(store: LocalArtifactStore, tmp_path: Path) -> None:
    content = b"packed output" * 1000
    expected = hashlib.sha256(content).hexdigest()
    source = _archive(tmp_path / "out.tgz", content)

    digest, size = await store.put_file(source)

    assert (digest, size) == (expected, len(content))
    assert not source.exists()  # moved, not copied
    assert store.path(digest) == store.root / expected[:2] / expected[2:]
    assert store.path(digest).read_bytes() == content
    assert await store.exists(digest)
    assert not await store.exists(hashlib.sha256(b"other").hexdigest())


async def test_unknown_digest_is_key_error(store: LocalArtifactStore) -> None:
    with pytest.raises(KeyError):
        store.path("0" * 64)


@pytest.mark.parametrize(
    "digest",
    [
        "../../etc/passwd",
        "abc",
        "",
        "0" * 63,
        "0" * 65,
        "A" * 64,
        "g" * 64,
        "0" * 62 + "/.",
        "../" + "0" * 61,
    ],
)
async def test_malformed_digest_is_refused(store: LocalArtifactStore, tmp_path: Path, digest: str) -> None:
    """Hazard: a digest from a request used as a path component could read any file."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("secret")
    with pytest.raises(KeyError):
        store.path(digest)
    assert not await store.exists(digest)


async def test_put_same_content_twice_keeps_one_copy(store: LocalArtifactStore, tmp_path: Path) -> None:
    first = await store.put_file(_archive(tmp_path / "a.tgz", b"same"))
    second = await store.put_file(_archive(tmp_path / "b.tgz", b"same"))
    assert first == second
    assert not (tmp_path / "b.tgz").exists()
    assert _stored_files(store) == [store.path(first[0])]


async def test_concurrent_puts_of_same_content(store: LocalArtifactStore, tmp_path: Path) -> None:
    content = os.urandom(256 * 1024)
    sources = [_archive(tmp_path / f"{i}.tgz", content) for i in range(20)]
    results = await asyncio.gather(*(store.put_file(s) for s in sources))
    assert set(results) == {(hashlib.sha256(content).hexdigest(), len(content))}
    assert _stored_files(store) == [store.path(results[0][0])]
    assert store.path(results[0][0]).read_bytes() == content
    assert not any(s.exists() for s in sources)


async def test_put_across_filesystems_copies(
    store: LocalArtifactStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename across filesystems fails with EXDEV; the store must fall back to copy + delete."""
    real_replace = os.replace
    source = _archive(tmp_path / "elsewhere.tgz", b"remote bytes")

    def replace(src: object, dst: object) -> None:
        if Path(str(src)) == source:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", replace)
    digest, size = await store.put_file(source)
    assert store.path(digest).read_bytes() == b"remote bytes"
    assert size == len(b"remote bytes")
    assert not source.exists()
    assert _stored_files(store) == [store.path(digest)]


async def test_put_does_not_block_the_event_loop(store: LocalArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "big.tgz"
    with open(source, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(1024 * 1024))
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    await store.put_file(source)
    during = ticks - before
    stop.set()
    await task
    assert during > 0


def test_build_storage(tmp_path: Path) -> None:
    artifacts, logs = build_storage(Settings(data_dir=tmp_path / "data"))
    assert isinstance(artifacts, LocalArtifactStore)
    assert isinstance(logs, LocalLogStore)
    assert artifacts.root == tmp_path / "data" / "artifacts"
    assert logs.root == tmp_path / "data" / "logs"
    assert artifacts.root.is_dir() and logs.root.is_dir()
