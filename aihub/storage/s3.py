"""Artifacts and archived logs in an S3-compatible object store (AWS S3, MinIO, Ceph RGW, GCS's S3 API …).

Chosen by ``AIHUB_ARTIFACT_STORE=s3://BUCKET/PREFIX`` with ``AIHUB_S3_ENDPOINT_URL`` (omit it for AWS) and
the standard ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` / ``AWS_REGION``, or the
rest of the usual chain (web identity, container and instance credentials). The client is ``obstore`` (Rust's
``object_store`` crate): async, streaming in both directions, concurrent multipart uploads straight from a
file, retries with exponential backoff, and URL signing — all without a Python HTTP stack in the data path.

Layout under ``PREFIX``::

    artifacts/ab/cdef…               content-addressed archives (sha256 hex digest split after two characters)
    logs/<run>/<node>/<attempt>.log  a node attempt's log, archived once the attempt has ended
    builds/<build>.log               a module build's log, archived once the build has ended
    uploads/<run>/<node>/<attempt>/<output>.tar.gz   where a pod puts an output through a presigned URL

Putting an artifact hashes the local archive first; a digest already stored is not sent again (a HEAD
request). Otherwise the file is uploaded under its final key as one PUT or one multipart upload: S3 makes
neither visible before it completes — the multipart upload is the temporary object, ``CompleteMultipartUpload``
the commit — so no reader ever sees half an artifact under a digest, and the digest is recorded as an output
only after the put returned. Every read hashes what it receives and refuses an object whose bytes do not
match its digest (:class:`~aihub.storage.base.ArtifactCorrupt`); downloads go to a temporary file, never
into memory.

A store that is down or slow: every request is retried with exponential backoff (100 ms doubling up to 5 s)
until ``AIHUB_S3_RETRY_SECONDS`` (default 60) have passed; then :class:`~aihub.storage.base.StoreError`
names the store and what failed, and the node that needed it fails with that message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import obstore
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import S3Store

from aihub.settings import parse_store_url
from aihub.storage.base import ArtifactCorrupt, ArtifactMissing, DoneCheck, StoreError, pause
from aihub.storage.local import (
    COMPACTED_NOTE,
    MAX_LINE_BYTES,
    TAIL_LINE_CHARS,
    LocalLogStore,
    _cut_tail_line,
    _LineSplitter,
    corrupt_message,
    missing_message,
)

__all__ = ["S3ArtifactStore", "S3Config", "S3LogStore", "parse_store_url"]

log = logging.getLogger(__name__)

_DIGEST = re.compile(r"[0-9a-f]{64}")
_CHUNK = 8 * 1024 * 1024
_PART = 16 * 1024 * 1024
_CONCURRENCY = 8
# obstore raises the builtin FileNotFoundError for a missing object, its own errors (and OSError, TimeoutError
# …) for the rest
_NOT_FOUND = (NotFoundError, FileNotFoundError)
_FAILURE = (BaseError, OSError, RuntimeError)


class S3Config:
    """Everything needed to reach the store; builds the obstore client."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        retry_seconds: float = 60.0,
        region: str | None = None,
    ) -> None:
        self.bucket, self.prefix = parse_store_url(url)
        self.endpoint_url = endpoint_url
        self.retry_seconds = retry_seconds
        self.region = (
            region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        )
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def client(self) -> S3Store:
        config: dict[str, Any] = {"region": self.region}
        client_options: dict[str, Any] = {
            "connect_timeout": timedelta(seconds=min(5.0, self.retry_seconds)),
            # one request (a HEAD, a GET's start, one part of an upload) that hangs this long is retried
            "timeout": timedelta(seconds=min(30.0, self.retry_seconds)),
        }
        if self.endpoint_url:
            config["endpoint"] = self.endpoint_url
            config["virtual_hosted_style_request"] = False
            if self.endpoint_url.startswith("http://"):
                client_options["allow_http"] = True
        retry = {
            "max_retries": 1000,  # bounded by the time below
            "retry_timeout": timedelta(seconds=self.retry_seconds),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=5),
                "base": 2,
            },
        }
        return S3Store(
            self.bucket,
            prefix=self.prefix or None,
            config=config,  # type: ignore[arg-type]
            client_options=client_options,  # type: ignore[arg-type]
            retry_config=retry,  # type: ignore[arg-type]
        )


def artifact_key(digest: str) -> str:
    return f"artifacts/{digest[:2]}/{digest[2:]}"


def log_key(run_id: int, node: str, attempt: int) -> str:
    return f"logs/{run_id}/{node}/{attempt}.log"


def build_log_key(build_id: int) -> str:
    return f"builds/{build_id}.log"


def upload_key(run_id: int, node: str, attempt: int, output: str) -> str:
    return f"uploads/{run_id}/{node}/{attempt}/{output}.tar.gz"


def _failed(config: S3Config, what: str, exc: BaseException) -> StoreError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreError(
        f"object store {config.url} failed to {what} (after retrying for up to {config.retry_seconds:g} s,"
        f" AIHUB_S3_RETRY_SECONDS): {detail}"
    )


class S3ArtifactStore:
    """Content-addressed archives under ``PREFIX/artifacts/``; ``staging`` is a local dir for downloads."""

    presigns = True

    def __init__(self, config: S3Config, staging: Path) -> None:
        self.config = config
        self.client = config.client()
        self.staging = staging
        self.location = config.url

    async def put_file(self, archive: Path) -> tuple[str, int]:
        """Upload ``archive`` (consumed) unless its digest is stored already; returns (digest, size)."""
        archive = Path(archive)
        try:
            digest, size = await asyncio.to_thread(_hash_file, archive)
            key = artifact_key(digest)
            if not await self._exists(key):
                await self.put_path(key, archive, size)
        finally:
            with contextlib.suppress(FileNotFoundError):
                archive.unlink()
        return digest, size

    async def put_path(self, key: str, path: Path, size: int | None = None) -> None:
        """Upload a local file under ``key`` (a single PUT below one part, else a concurrent multipart upload)."""
        if size is None:
            size = (await asyncio.to_thread(path.stat)).st_size
        # obstore retries connection errors and 5xx itself, but not a write that timed out: the whole upload
        # is tried again, with backoff, until AIHUB_S3_RETRY_SECONDS have passed
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.retry_seconds
        pause = 0.2
        while True:
            try:
                await obstore.put_async(
                    self.client,
                    key,
                    path,
                    use_multipart=size > _PART,
                    chunk_size=_PART,
                    max_concurrency=_CONCURRENCY,
                )
                return
            except _NOT_FOUND as exc:  # the local file is gone: no point in trying again
                raise _failed(self.config, f"store {key}", exc) from exc
            except _FAILURE as exc:
                if loop.time() + pause > deadline:
                    raise _failed(self.config, f"store {key}", exc) from exc
                log.info(
                    "upload of %s to %s failed (%s); trying again in %.1f s", key, self.location, exc, pause
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def exists(self, digest: str) -> bool:
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            return False
        return await self._exists(artifact_key(digest))

    async def _exists(self, key: str) -> bool:
        try:
            await obstore.head_async(self.client, key)
        except _NOT_FOUND:
            return False
        except _FAILURE as exc:
            raise _failed(self.config, f"look up {key}", exc) from exc
        return True

    @asynccontextmanager
    async def open(self, digest: str) -> AsyncIterator[Path]:
        """Download into a temporary file while hashing; yield it once the digest matched; remove it after."""
        self._check(digest)
        self.staging.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.staging, prefix="download-", suffix=".tar.gz")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in self.stream(digest):
                    await asyncio.to_thread(out.write, chunk)
            yield path
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)

    async def stream(self, digest: str) -> AsyncIterator[bytes]:
        self._check(digest)
        key = artifact_key(digest)
        hasher = hashlib.sha256()
        async for chunk in self._get(key, what=missing_message(digest, self.location)):
            hasher.update(chunk)
            yield chunk
        if hasher.hexdigest() != digest:
            raise ArtifactCorrupt(corrupt_message(digest, hasher.hexdigest(), self.location))

    async def _get(self, key: str, *, what: str) -> AsyncIterator[bytes]:
        try:
            result = await obstore.get_async(self.client, key)
        except _NOT_FOUND:
            raise ArtifactMissing(what) from None
        except _FAILURE as exc:
            raise _failed(self.config, f"read {key}", exc) from exc
        try:
            async for chunk in result.stream(min_chunk_size=_CHUNK):
                yield bytes(chunk)
        except _FAILURE as exc:
            raise _failed(self.config, f"read {key}", exc) from exc

    async def get_to_file(self, key: str, dest: Path) -> None:
        """Download any object of the store to ``dest`` (streamed); ArtifactMissing if there is none."""
        out = await asyncio.to_thread(open, dest, "wb")
        try:
            async for chunk in self._get(key, what=f"{self.location}/{key} does not exist"):
                await asyncio.to_thread(out.write, chunk)
        finally:
            out.close()

    async def delete(self, key: str) -> None:
        try:
            await obstore.delete_async(self.client, key)
        except _NOT_FOUND:
            return
        except _FAILURE as exc:
            raise _failed(self.config, f"delete {key}", exc) from exc

    async def presign(self, method: str, key: str, seconds: float) -> str:
        """A URL that allows exactly ``method`` on exactly ``key`` for ``seconds`` (no listing, no other key)."""
        try:
            return await obstore.sign_async(
                self.client,
                method,  # type: ignore[arg-type]
                key,
                timedelta(seconds=seconds),
            )
        except _FAILURE as exc:
            raise _failed(self.config, f"sign a URL for {key}", exc) from exc

    async def attempt_urls(
        self,
        run_id: int,
        node: str,
        attempt: int,
        inputs: dict[str, str],
        outputs: list[str],
        seconds: float,
    ) -> dict[str, str]:
        """Presigned URLs for one attempt, each for exactly one object: ``in:NAME`` — GET of the input's
        artifact (``inputs``: name → digest); ``out:NAME`` — PUT of the output's upload key, which belongs to
        this attempt alone. No URL allows listing, and none reaches another run's objects."""
        urls = {}
        for name, digest in inputs.items():
            self._check(digest)
            urls[f"in:{name}"] = await self.presign("GET", artifact_key(digest), seconds)
        for name in outputs:
            urls[f"out:{name}"] = await self.presign("PUT", upload_key(run_id, node, attempt, name), seconds)
        return urls

    async def take_upload(
        self, run_id: int, node: str, attempt: int, output: str, dest: Path, *, max_bytes: int | None = None
    ) -> None:
        """Download what the attempt put at its upload key for ``output`` to ``dest``, then delete the key
        (ArtifactMissing when it put nothing there; StoreError, without downloading, when it is larger than
        ``max_bytes`` — a presigned PUT cannot bound the size, so it is bounded here)."""
        key = upload_key(run_id, node, attempt, output)
        try:
            meta = await obstore.head_async(self.client, key)
        except _NOT_FOUND:
            raise ArtifactMissing(f"{self.location}/{key} does not exist") from None
        except _FAILURE as exc:
            raise _failed(self.config, f"look up {key}", exc) from exc
        if max_bytes is not None and int(meta["size"]) > max_bytes:
            await self.delete(key)
            raise StoreError(
                f"the upload is {meta['size']} bytes, larger than {max_bytes} bytes (AIHUB_MAX_UPLOAD_BYTES)"
            )
        await self.get_to_file(key, dest)
        await self.delete(key)

    def _check(self, digest: str) -> None:
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise ArtifactMissing(missing_message(digest, self.location))


def _hash_file(path: Path) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size


#: a running attempt's log is sent to the store this often when it grew (for replicas on other hosts) …
CHECKPOINT_SECONDS = 5.0
#: … while it is at most this big; a longer log is there when its attempt has ended
CHECKPOINT_MAX_BYTES = 16 * 1024 * 1024
#: a log over this size is sent again only after CHECKPOINT_SECONDS for each such size it has (a 16 MiB log
#: every 80 s): each checkpoint sends the whole log (S3 cannot append), so big ones would cost ~3 MiB/s each
CHECKPOINT_PACE_BYTES = 1024 * 1024


class S3LogStore(LocalLogStore):
    """Logs written on local disk by the attempts this process runs (as :class:`LocalLogStore`), archived
    to the object store when an attempt ends; every read falls back to the archive when this host has no
    local copy, which is how an API replica serves a log an engine worker on another host wrote.

    While an attempt runs, its worker also sends the log so far every :data:`CHECKPOINT_SECONDS` when it grew
    (:meth:`checkpoint`, up to :data:`CHECKPOINT_MAX_BYTES`), and :meth:`follow` on a host without the file
    polls the object for what was added: a replica on another host shows a running attempt's log a few seconds
    behind."""

    checkpoints = True

    def __init__(
        self, root: Path, store: S3ArtifactStore, *, poll_interval: float = 0.05, remote_poll: float = 1.0
    ) -> None:
        super().__init__(root, poll_interval=poll_interval)
        self.store = store
        self.remote_poll = remote_poll
        self.clock = time.monotonic
        #: attempt -> (bytes sent by its last checkpoint, when)
        self._checkpointed: dict[tuple[int, str, int], tuple[int, float]] = {}
        # archived attempts (the latest few thousand): a checkpoint never overwrites an archive
        self._final: OrderedDict[tuple[int, str, int], None] = OrderedDict()
        # one per attempt being sent: a checkpoint and the archive of one attempt never cross, and a big log's
        # checkpoint does not hold up another attempt's archive (which its hand-off waits for)
        self._sending: dict[tuple[int, str, int], asyncio.Lock] = {}

    async def checkpoint(self, run_id: int, node: str, attempt: int) -> None:
        """Send the running attempt's log so far, when it grew since the last time and is not too big (a big
        one less often: :data:`CHECKPOINT_PACE_BYTES`)."""
        local = self._local(run_id, node, attempt)
        if local is None:
            return
        ident = (run_id, node, attempt)
        async with self._sending.setdefault(ident, asyncio.Lock()):
            size = (await asyncio.to_thread(local.stat)).st_size
            if ident in self._final or size > CHECKPOINT_MAX_BYTES or not self._due(ident, size):
                return
            data = await asyncio.to_thread(_read_head, local, size)  # (the node may be writing past it)
            key = log_key(run_id, node, attempt)
            try:
                await obstore.put_async(self.store.client, key, data)
            except _FAILURE as exc:
                raise _failed(self.store.config, f"store {key}", exc) from exc
            self._checkpointed[ident] = (len(data), self.clock())

    def _due(self, ident: tuple[int, str, int], size: int) -> bool:
        sent, at = self._checkpointed.get(ident, (-1, 0.0))
        if size == sent:
            return False
        return (
            size <= CHECKPOINT_PACE_BYTES
            or self.clock() - at >= CHECKPOINT_SECONDS * size / CHECKPOINT_PACE_BYTES
        )

    def _local(self, run_id: int, node: str, attempt: int) -> Path | None:
        location = self._location(run_id, node, attempt)
        return location if location.is_file() else None

    async def archive(self, run_id: int, node: str, attempt: int) -> None:
        ident = (run_id, node, attempt)
        try:
            async with self._sending.setdefault(ident, asyncio.Lock()):
                self._checkpointed.pop(ident, None)
                self._final[ident] = None
                while len(self._final) > 10_000:
                    self._final.popitem(last=False)
                local = self._local(run_id, node, attempt)
                if local is None:
                    return
                await self.store.put_path(log_key(run_id, node, attempt), local)
        finally:
            self._sending.pop(ident, None)  # a checkpoint after this one finds the attempt final

    async def archive_build_log(self, build_id: int, path: Path) -> None:
        if await asyncio.to_thread(path.is_file):
            await self.store.put_path(build_log_key(build_id), path)

    async def read_build_log(self, build_id: int, path: Path, offset: int, limit: int) -> bytes:
        """This host's copy while it has one (the build runs here), else the archive."""
        if await asyncio.to_thread(path.is_file):
            return await super().read_build_log(build_id, path, offset, limit)
        key = build_log_key(build_id)
        size = await self._key_size(key)
        if size is None:
            return b""
        return await self._key_range(key, max(offset, 0), min(size, max(offset, 0) + limit))

    async def _head_size(self, run_id: int, node: str, attempt: int) -> int | None:
        return await self._key_size(log_key(run_id, node, attempt))

    async def _key_size(self, key: str) -> int | None:
        try:
            meta = await obstore.head_async(self.store.client, key)
        except _NOT_FOUND:
            return None
        except _FAILURE as exc:
            raise _failed(self.store.config, f"look up {key}", exc) from exc
        return int(meta["size"])

    async def _range(self, run_id: int, node: str, attempt: int, start: int, end: int) -> bytes:
        return await self._key_range(log_key(run_id, node, attempt), start, end)

    async def _key_range(self, key: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        try:
            data = await obstore.get_range_async(self.store.client, key, start=start, end=end)
        except _NOT_FOUND:
            return b""
        except _FAILURE as exc:
            raise _failed(self.store.config, f"read {key}", exc) from exc
        return bytes(data)

    async def size(self, run_id: int, node: str, attempt: int) -> int:
        if self._local(run_id, node, attempt) is not None:
            return await super().size(run_id, node, attempt)
        return await self._head_size(run_id, node, attempt) or 0

    async def read(
        self, run_id: int, node: str, attempt: int, offset: int = 0, limit: int = 65536
    ) -> tuple[bytes, int]:
        if self._local(run_id, node, attempt) is not None:
            return await super().read(run_id, node, attempt, offset, limit)
        if offset < 0 or limit <= 0:
            raise ValueError(f"offset must be >= 0 and limit > 0 (got {offset}, {limit})")
        size = await self._head_size(run_id, node, attempt)
        if size is None:
            return b"", 0
        end = min(size, offset + min(limit, 8 * 1024 * 1024))
        data = await self._range(run_id, node, attempt, offset, end)
        return data, offset + len(data)

    async def tail_lines(self, run_id: int, node: str, attempt: int, count: int) -> list[str]:
        if self._local(run_id, node, attempt) is not None or count <= 0:
            return await super().tail_lines(run_id, node, attempt, count)
        size = await self._head_size(run_id, node, attempt)
        if not size:
            return []
        window = count * (TAIL_LINE_CHARS + 1) + 1
        start = max(0, size - window)
        text = (await self._range(run_id, node, attempt, start, size)).removesuffix(b"\n")
        raw_lines = text.split(b"\n")
        lines = raw_lines[-count:]
        cut_first = start > 0 and len(lines) == len(raw_lines)
        return [_cut_tail_line(raw, partial=cut_first and i == 0) for i, raw in enumerate(lines)]

    async def download(self, run_id: int, node: str, attempt: int) -> AsyncIterator[bytes] | None:
        if self._local(run_id, node, attempt) is not None:
            return await super().download(run_id, node, attempt)
        if await self._head_size(run_id, node, attempt) is None:
            return None
        key = log_key(run_id, node, attempt)
        return self.store._get(key, what=f"{self.store.location}/{key} does not exist")

    async def follow(
        self,
        run_id: int,
        node: str,
        attempt: int,
        *,
        done: DoneCheck,
        offset: int = 0,
        wake: asyncio.Event | None = None,
    ) -> AsyncIterator[str]:
        """The local file when this host has one; else the object: its checkpoints while the attempt runs
        (polled every ``remote_poll`` seconds), then its archive, until ``done()`` and drained."""
        if self._local(run_id, node, attempt) is not None:
            async for line in super().follow(run_id, node, attempt, done=done, offset=offset, wake=wake):
                yield line
            return
        key = log_key(run_id, node, attempt)
        splitter = _LineSplitter()
        while True:
            finished = await done()  # before the look: what was archived before it turned true is read
            size = await self._key_size(key) or 0
            if size < offset:  # the log cap cut the middle out before the archive: go on from its end
                for line in splitter.flush():
                    yield line
                yield COMPACTED_NOTE
                offset = size
            while offset < size:
                data = await self._key_range(key, offset, min(size, offset + 4 * MAX_LINE_BYTES))
                if not data:
                    break
                offset += len(data)
                for line in splitter.feed(data):
                    yield line
            if finished:
                for line in splitter.flush():
                    yield line
                return
            await pause(self.remote_poll, wake)


def _read_head(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)
