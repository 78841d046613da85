"""The storage contract, the same tests for every backend: local disk and an S3 server (moto_server).

Content-addressed put (an existing digest is not uploaded again), streaming get, nothing visible before the
whole object is, the sha256 checked on every read (a corrupted object is refused), a missing object named in
the error, and logs archived once an attempt ends and read back from the archive by a host without a copy.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import obstore
import pytest

from aihub.engine.artifacts import pack
from aihub.engine.executors.base import ArtifactInput, Job, JobKey
from aihub.engine.executors.local import LocalExecutor
from aihub.settings import Settings
from aihub.storage import ArtifactCorrupt, ArtifactMissing, StoreError, build_storage
from aihub.storage.base import ArtifactStore
from aihub.storage.local import LocalArtifactStore, LocalLogStore
from tests.s3support import S3Server

BIG = 20 * 1024 * 1024 + 12345  # more than one multipart part


@dataclass
class Backend:
    name: str
    settings: Callable[[Path], Settings]
    artifacts: ArtifactStore
    logs: LocalLogStore
    corrupt: Callable[[str, bytes], None]
    writes: Callable[[str], int]  # how many times the object of a digest was written since `reset`
    reset: Callable[[], None]


def _local(tmp_path: Path) -> Backend:
    settings = Settings(data_dir=tmp_path / "host-a")
    artifacts, logs = build_storage(settings)
    assert isinstance(artifacts, LocalArtifactStore)
    inodes: dict[str, int] = {}

    def corrupt(digest: str, data: bytes) -> None:
        path = artifacts.root / digest[:2] / digest[2:]
        path.chmod(0o644)
        path.write_bytes(data)

    def writes(digest: str) -> int:
        # a write of the object replaces the file (a rename into place): a new inode
        path = artifacts.root / digest[:2] / digest[2:]
        ino = path.stat().st_ino
        before = inodes.setdefault(digest, ino)
        return 0 if ino == before else 1

    return Backend(
        "local",
        lambda root: Settings(data_dir=root),
        artifacts,
        logs,
        corrupt,
        writes,
        inodes.clear,
    )


def _s3(tmp_path: Path, server: S3Server) -> Backend:
    bucket = server.bucket()

    def make(root: Path) -> Settings:
        return Settings(
            data_dir=root,
            artifact_store=f"s3://{bucket}/team/aihub",
            s3_endpoint_url=server.endpoint,
            s3_retry_seconds=5,
        )

    settings = make(tmp_path / "host-a")
    artifacts, logs = build_storage(settings)

    def key(digest: str) -> str:
        return f"team/aihub/artifacts/{digest[:2]}/{digest[2:]}"

    def writes(digest: str) -> int:
        path = f"/{bucket}/{key(digest)}"
        requests = server.recorded()
        server.start_recording()
        return sum(
            1 for method, p in requests if method in ("PUT", "POST") and p == path
        )  # POST: multipart create/complete

    return Backend(
        "s3",
        make,
        artifacts,
        logs,
        lambda digest, data: obstore.put(artifacts.client, f"artifacts/{digest[:2]}/{digest[2:]}", data),
        writes,
        server.start_recording,
    )


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        yield _local(tmp_path)
    else:
        yield _s3(tmp_path, request.getfixturevalue("s3_server"))


def _file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _big(path: Path) -> tuple[Path, str]:
    hasher = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(BIG // 65536 + 1):
            block = (i.to_bytes(4, "big") * 16384)[: min(65536, BIG - i * 65536)]
            if not block:
                break
            hasher.update(block)
            f.write(block)
    return path, hasher.hexdigest()


async def _read_all(store: ArtifactStore, digest: str) -> bytes:
    return b"".join([chunk async for chunk in store.stream(digest)])


async def test_put_is_content_addressed_and_consumes_the_archive(backend: Backend, tmp_path: Path) -> None:
    content = b"an archive\n" * 1000
    archive = _file(tmp_path / "a.tar.gz", content)
    digest, size = await backend.artifacts.put_file(archive)
    assert digest == hashlib.sha256(content).hexdigest()
    assert size == len(content)
    assert not archive.exists()
    assert await backend.artifacts.exists(digest)
    assert not await backend.artifacts.exists("0" * 64)
    assert not await backend.artifacts.exists("../../etc/passwd")
    assert await _read_all(backend.artifacts, digest) == content


async def test_an_existing_object_is_not_uploaded_again(backend: Backend, tmp_path: Path) -> None:
    content = b"same bytes" * 5000
    backend.reset()
    digest, _ = await backend.artifacts.put_file(_file(tmp_path / "one", content))
    # the first put writes it (S3: the PUT the server recorded; local disk: the inode seen is the reference)
    assert backend.writes(digest) == (1 if backend.name == "s3" else 0)
    backend.reset()
    again, _ = await backend.artifacts.put_file(_file(tmp_path / "two", content))
    assert again == digest
    assert backend.writes(digest) == 0
    assert await _read_all(backend.artifacts, digest) == content


async def test_a_large_object_streams_both_ways(backend: Backend, tmp_path: Path) -> None:
    path, expected = _big(tmp_path / "big")
    digest, size = await backend.artifacts.put_file(path)
    assert (digest, size) == (expected, BIG)
    hasher = hashlib.sha256()
    chunks = 0
    async for chunk in backend.artifacts.stream(digest):
        assert len(chunk) <= 16 * 1024 * 1024  # streamed, never the whole object at once
        hasher.update(chunk)
        chunks += 1
    assert hasher.hexdigest() == digest
    assert chunks > 1
    async with backend.artifacts.open(digest) as local:
        assert local.stat().st_size == BIG
        opened = local
    if backend.name == "s3":
        assert not opened.exists()  # the downloaded copy is removed after the block


async def test_a_corrupted_object_is_refused_on_every_read(backend: Backend, tmp_path: Path) -> None:
    digest, _ = await backend.artifacts.put_file(_file(tmp_path / "a", b"the real content\n"))
    backend.corrupt(digest, b"the real content, tampered\n")
    with pytest.raises(ArtifactCorrupt, match=f"artifact {digest} .* is corrupt"):
        async with backend.artifacts.open(digest):
            pytest.fail("a corrupt artifact was handed out")
    with pytest.raises(ArtifactCorrupt, match="refused"):
        await _read_all(backend.artifacts, digest)


async def test_a_missing_object_is_named_in_the_error(backend: Backend) -> None:
    digest = "ab" * 32
    with pytest.raises(
        ArtifactMissing, match=f"artifact {digest} is not in the store {backend.artifacts.location}"
    ):
        async with backend.artifacts.open(digest):
            pass
    with pytest.raises(KeyError, match=digest):  # older callers catch KeyError
        await _read_all(backend.artifacts, digest)
    with pytest.raises(ArtifactMissing, match="not an artifact digest"):
        async with backend.artifacts.open("../../escape"):
            pass


async def test_a_failed_put_leaves_nothing_under_the_digest(backend: Backend, tmp_path: Path) -> None:
    missing = tmp_path / "vanished.tar.gz"
    with pytest.raises(OSError):
        await backend.artifacts.put_file(missing)
    content = b"x" * 100
    digest = hashlib.sha256(content).hexdigest()
    assert not await backend.artifacts.exists(digest)


async def test_an_archived_log_is_served_by_another_host(backend: Backend, tmp_path: Path) -> None:
    writer = backend.logs
    path = writer.path(7, "step1", 1)
    path.write_bytes(b"".join(f"line {i}\n".encode() for i in range(1, 2001)))
    await writer.archive(7, "step1", 1)
    if backend.name == "local":
        reader = writer  # one disk: the same files
    else:
        _, reader = build_storage(backend.settings(tmp_path / "host-b"))  # shares nothing but the store
        assert not reader.path(7, "step1", 1).exists()
    assert await reader.size(7, "step1", 1) == path.stat().st_size
    data, offset = await reader.read(7, "step1", 1, 0, 14)
    assert (data, offset) == (b"line 1\nline 2\n", 14)
    assert await reader.tail_lines(7, "step1", 1, 2) == ["line 1999", "line 2000"]

    async def done() -> bool:
        return True

    lines = [line async for line in reader.follow(7, "step1", 1, done=done, offset=offset)]
    assert lines[0] == "line 3" and lines[-1] == "line 2000" and len(lines) == 1998
    chunks = await reader.download(7, "step1", 1)
    assert chunks is not None
    assert b"".join([c async for c in chunks]) == path.read_bytes()
    assert await reader.download(7, "step1", 2) is None
    assert await reader.read(7, "step1", 2) == (b"", 0)
    assert await reader.tail_lines(7, "step1", 2, 5) == []


def test_a_bad_store_url_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="AIHUB_ARTIFACT_STORE must look like s3://BUCKET/PREFIX"):
        Settings(data_dir=tmp_path, artifact_store="https://bucket/prefix")


async def test_an_unreachable_store_fails_after_the_bound_with_a_clear_message(tmp_path: Path) -> None:
    with socket_closed() as port:
        settings = Settings(
            data_dir=tmp_path / "d",
            artifact_store="s3://nowhere/p",
            s3_endpoint_url=f"http://127.0.0.1:{port}",
            s3_retry_seconds=1,
        )
        artifacts, _ = build_storage(settings)
        with pytest.raises(
            StoreError, match=r"object store s3://nowhere/p failed to look up .*AIHUB_S3_RETRY_SECONDS"
        ):
            await artifacts.put_file(_file(tmp_path / "a", b"data"))


class socket_closed:
    """A local port nothing listens on (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None


def test_the_s3_store_keeps_no_artifact_in_the_data_dir(s3_server: S3Server, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "d",
        artifact_store=f"s3://{s3_server.bucket()}",
        s3_endpoint_url=s3_server.endpoint,
    )
    settings.ensure_dirs()
    assert not (settings.data_dir / "artifacts").exists()
    assert os.listdir(settings.data_dir)  # the rest is there


async def test_a_node_never_gets_a_corrupt_input(backend: Backend, tmp_path: Path) -> None:
    """The executor's fetch is a verified read: the attempt fails naming the artifact, the command never runs."""
    src = tmp_path / "out"
    src.write_text("model weights\n")
    archive = tmp_path / "out.tar.gz"
    pack(src, archive)
    digest, _ = await backend.artifacts.put_file(archive)
    backend.corrupt(digest, b"\x1f\x8b not what was stored")
    executor = LocalExecutor(
        tmp_path / "runs", backend.artifacts, backend.logs, isolation="off", private_paths=[]
    )
    await executor.probe()
    marker = tmp_path / "ran"
    try:
        job = Job(
            key=JobKey(1, "consumer", 1),
            argv=["sh", "-c", f"touch {marker}"],
            env={},
            artifacts_in=[ArtifactInput("model", str(tmp_path / "in" / "model"), digest)],
        )
        handle = await executor.start(job)
        async with asyncio.timeout(60):
            report = await executor.wait(handle)
    finally:
        await executor.close()
    assert report.exit_code is None
    assert report.error is not None
    assert (
        report.error.startswith(f"input 'model': artifact {digest} in the store ")
        and "is corrupt" in report.error
    )
    assert not marker.exists()
    assert not (tmp_path / "in" / "model").exists()


async def test_a_build_log_is_archived_and_read_by_another_host(backend: Backend, tmp_path: Path) -> None:
    path = tmp_path / "host-a" / "builds" / "5.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("12:00:00 build 1 of module 'm'\n12:00:01 build succeeded\n")
    await backend.logs.archive_build_log(5, path)
    if backend.name == "local":
        reader, seen_at = backend.logs, path
    else:
        _, reader = build_storage(backend.settings(tmp_path / "host-b"))
        seen_at = tmp_path / "host-b" / "builds" / "5.log"  # not there: the archive is read
    assert await reader.read_build_log(5, seen_at, 0, 1 << 20) == path.read_bytes()
    assert await reader.read_build_log(5, seen_at, 9, 5) == b"build"
    assert await reader.read_build_log(6, seen_at.with_name("6.log"), 0, 100) == b""


async def test_a_running_attempts_log_is_followed_from_another_host(backend: Backend, tmp_path: Path) -> None:
    """Live: the worker sends the log so far now and then (checkpoint); a host without the file follows it."""
    writer = backend.logs
    path = writer.path(9, "train", 1)
    path.write_text("epoch 1\nepoch 2\n")
    await writer.checkpoint(9, "train", 1)
    if backend.name == "local":
        reader = writer
    else:
        _, reader = build_storage(backend.settings(tmp_path / "host-b"))
        reader.remote_poll = 0.05  # type: ignore[attr-defined]
    ended = asyncio.Event()

    async def done() -> bool:
        return ended.is_set()

    lines = reader.follow(9, "train", 1, done=done)
    async with asyncio.timeout(30):
        assert [await anext(lines), await anext(lines)] == ["epoch 1", "epoch 2"]  # while it runs
        with open(path, "a") as f:
            f.write("epoch 3\npartial")
        await writer.checkpoint(9, "train", 1)
        assert await anext(lines) == "epoch 3"
        with open(path, "a") as f:
            f.write(" line\nlast\n")
        await writer.archive(9, "train", 1)
        await writer.checkpoint(9, "train", 1)  # too late: never overwrites the archive
        ended.set()
        assert [line async for line in lines] == ["partial line", "last"]
    assert await reader.tail_lines(9, "train", 1, 1) == ["last"]


async def test_a_big_running_log_is_checkpointed_less_often(tmp_path: Path, s3_server: S3Server) -> None:
    """Each checkpoint sends the whole log (S3 cannot append): one over CHECKPOINT_PACE_BYTES goes again only
    after CHECKPOINT_SECONDS per such size; a small one whenever it grew."""
    from aihub.storage.s3 import CHECKPOINT_PACE_BYTES, CHECKPOINT_SECONDS, S3LogStore, log_key

    logs = _s3(tmp_path, s3_server).logs
    assert isinstance(logs, S3LogStore)
    now = [1000.0]
    logs.clock = lambda: now[0]

    def sent() -> int:
        return len(bytes(obstore.get(logs.store.client, log_key(3, "train", 1)).bytes()))

    path = logs.path(3, "train", 1)
    path.write_bytes(b"step\n" * (3 * CHECKPOINT_PACE_BYTES // 5))  # 3 MiB
    await logs.checkpoint(3, "train", 1)
    assert sent() == path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"more\n")
    due = CHECKPOINT_SECONDS * path.stat().st_size / CHECKPOINT_PACE_BYTES  # a little over 3 x
    now[0] += due - 0.5
    await logs.checkpoint(3, "train", 1)
    assert sent() == 3 * CHECKPOINT_PACE_BYTES // 5 * 5  # not yet
    now[0] += 0.5
    await logs.checkpoint(3, "train", 1)
    assert sent() == path.stat().st_size

    small = logs.path(3, "eval", 1)
    small.write_text("epoch 1\n")
    await logs.checkpoint(3, "eval", 1)
    with open(small, "a") as f:
        f.write("epoch 2\n")
    await logs.checkpoint(3, "eval", 1)  # no time has passed: a small log goes whenever it grew
    assert bytes(obstore.get(logs.store.client, log_key(3, "eval", 1)).bytes()) == b"epoch 1\nepoch 2\n"


async def test_an_attempts_archive_does_not_wait_for_another_attempts_checkpoint(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """The lock that keeps a checkpoint from overwriting its attempt's archive is the attempt's own: while one
    attempt's (big, slow) checkpoint is being sent, another attempt's archive — which its hand-off waits for
    — goes at once; a checkpoint after the archive never overwrites it."""
    from aihub.storage.s3 import S3LogStore, log_key

    logs = _s3(tmp_path, s3_server).logs
    assert isinstance(logs, S3LogStore)
    logs.path(4, "slow", 1).write_text("still running\n")
    done = logs.path(4, "done", 1)
    done.write_text("finished\n")
    async with logs._sending.setdefault((4, "slow", 1), asyncio.Lock()):  # a checkpoint of "slow" under way
        async with asyncio.timeout(30):
            await logs.archive(4, "done", 1)
    assert bytes(obstore.get(logs.store.client, log_key(4, "done", 1)).bytes()) == b"finished\n"
    done.write_text("overwritten\n")
    await logs.checkpoint(4, "done", 1)
    assert bytes(obstore.get(logs.store.client, log_key(4, "done", 1)).bytes()) == b"finished\n"
