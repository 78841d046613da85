"""Pods move their data through presigned object-store URLs (issue 17): the engine hands each attempt a GET URL
per input artifact and a PUT URL per ``path`` output, each for exactly one object; the wrapper fetches and
uploads with them (the sha256 of every input checked in the pod), and the API route is not used at all.

The S3 server is moto_server, which does not check presigned signatures; so the scope of each URL is checked
by recomputing its AWS Signature V4 (the algorithm S3 applies): the signature the URL carries is the one for
its own method and key, and differs from the one any other object, another run's key or a listing needs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import obstore
import pytest
from kubernetes_asyncio import client

from aihub.engine.artifacts import pack
from aihub.engine.executors.base import ArtifactInput, OutputDecl
from aihub.engine.executors.kubernetes import KubernetesExecutor
from aihub.storage.local import LocalLogStore
from aihub.storage.s3 import S3ArtifactStore, S3Config, artifact_key, upload_key
from tests.k8s.kubelet import Kubelet
from tests.k8s.platform import Platform
from tests.k8s.test_k8s_executor import MakeJob
from tests.s3support import S3Server


@pytest.fixture
def store(s3_server: S3Server, tmp_path: Path) -> S3ArtifactStore:
    config = S3Config(f"s3://{s3_server.bucket()}/aihub", endpoint_url=s3_server.endpoint, retry_seconds=10)
    return S3ArtifactStore(config, tmp_path / "downloads")


@pytest.fixture
async def s3_executor(
    configuration: client.Configuration, store: S3ArtifactStore, logs: LocalLogStore, kubelet: Kubelet
) -> AsyncIterator[KubernetesExecutor]:
    executor = KubernetesExecutor(
        store, logs, namespace="aihub-test", configuration=configuration, helper_image="busybox:1.36.1-musl"
    )
    await executor.probe()
    yield executor
    await executor.close()


async def _stored(store: S3ArtifactStore, source: Path) -> str:
    archive = source.parent / f".{source.name}.tar.gz"
    pack(source, archive)
    digest, _ = await store.put_file(archive)
    return digest


def _local_digest(source: Path, tmp: Path) -> str:
    archive = tmp / f".{source.name}.expected.tar.gz"
    pack(source, archive)
    return hashlib.sha256(archive.read_bytes()).hexdigest()


async def test_a_pod_moves_its_data_through_presigned_urls_not_the_api(
    s3_executor: KubernetesExecutor,
    store: S3ArtifactStore,
    job: MakeJob,
    platform: Platform,
    logs: LocalLogStore,
    tmp_path: Path,
) -> None:
    produced = tmp_path / "produced"
    (produced / "dir").mkdir(parents=True)
    (produced / "dir" / "a.txt").write_text("in a dir\n")
    (produced / "file.txt").write_text("a file\n")
    dir_digest = await _stored(store, produced / "dir")
    file_digest = await _stored(store, produced / "file.txt")
    node_fs = tmp_path / "node-fs"
    inputs = [
        ArtifactInput("d", str(node_fs / "in-dir"), dir_digest),
        ArtifactInput("f", str(node_fs / "file.txt"), file_digest),
    ]
    out_dir, out_file = node_fs / "out-dir", node_fs / "out.txt"
    the_job = job(
        f'cat "$d/a.txt" "$f"; mkdir -p {out_dir}/sub; echo made > {out_dir}/sub/m.txt; echo one > {out_file}',
        inputs=inputs,
        env={"d": inputs[0].path, "f": inputs[1].path},
        outputs=[OutputDecl("od", str(out_dir), "path"), OutputDecl("of", str(out_file), "path")],
    )
    report = await s3_executor.wait(await s3_executor.start(the_job))
    log = (await logs.read(1, the_job.key.node, 1, 0, 1 << 20))[0].decode()
    assert report.ok, (report, log)
    assert log.splitlines() == ["in a dir", "a file"]
    assert platform.requests == []  # nothing went through the API
    # the outputs were repacked deterministically: the same digests the local executor stores
    assert report.outputs["od"].digest == _local_digest(out_dir, tmp_path)
    assert report.outputs["of"].digest == _local_digest(out_file, tmp_path)
    for output in report.outputs.values():
        assert output.digest is not None and await store.exists(output.digest)
    uploads = [m["path"] for batch in obstore.list(store.client, prefix="uploads/") for m in batch]  # type: ignore[attr-defined]
    assert uploads == []  # taken and removed


async def test_a_corrupt_input_is_refused_in_the_pod(
    s3_executor: KubernetesExecutor, store: S3ArtifactStore, job: MakeJob, logs: LocalLogStore, tmp_path: Path
) -> None:
    (tmp_path / "f.txt").write_text("x\n")
    digest = await _stored(store, tmp_path / "f.txt")
    marker = tmp_path / "command-ran"
    the_job = job(f"touch {marker}", inputs=[ArtifactInput("f", str(tmp_path / "in" / "f.txt"), digest)])
    # the executor reads the archive's kind before the pod starts; the object goes bad after that
    original = s3_executor._input_kinds

    async def kinds_then_corrupt(job_: object) -> object:
        result = await original(job_)  # type: ignore[arg-type]
        await obstore.put_async(store.client, artifact_key(digest), b"\x1f\x8b corrupted")
        return result

    s3_executor._input_kinds = kinds_then_corrupt  # type: ignore[method-assign]
    report = await s3_executor.wait(await s3_executor.start(the_job))
    log = (await logs.read(1, the_job.key.node, 1, 0, 1 << 20))[0].decode()
    assert report.exit_code is None and not marker.exists()
    assert f"artifact {digest} is corrupt (its sha256 does not match); refused" in log


# ------------------------------------------------------------------------------ the scope of each URL


def _sign(secret: str, date: str, region: str, string_to_sign: str) -> str:
    key = ("AWS4" + secret).encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def _signature_for(url: str, method: str, path: str, extra: dict[str, str] | None = None) -> str:
    """The SigV4 query signature S3 would require for ``method`` on ``path`` (with the URL's credentials, date
    and expiry, and ``extra`` query parameters)."""
    parts = urlsplit(url)
    params = {k: v for k, v in parse_qsl(parts.query) if k != "X-Amz-Signature"} | (extra or {})
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))
    canonical = "\n".join(
        [method, quote(path, safe="/-_.~"), query, f"host:{parts.netloc}", "", "host", "UNSIGNED-PAYLOAD"]
    )
    credential = params["X-Amz-Credential"].split("/")
    scope = "/".join(credential[1:])
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", params["X-Amz-Date"], scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    return _sign(os.environ["AWS_SECRET_ACCESS_KEY"], credential[1], credential[2], string_to_sign)


async def test_an_attempts_urls_reach_exactly_its_objects(store: S3ArtifactStore) -> None:
    mine, other = "ab" * 32, "cd" * 32
    urls = await store.attempt_urls(7, "train", 2, {"data": mine}, ["model"], 600)
    assert set(urls) == {"in:data", "out:model"}
    bucket, prefix = store.config.bucket, store.config.prefix
    cases = {
        "in:data": ("GET", f"/{bucket}/{prefix}/{artifact_key(mine)}"),
        "out:model": ("PUT", f"/{bucket}/{prefix}/{upload_key(7, 'train', 2, 'model')}"),
    }
    for name, (method, path) in cases.items():
        url = urls[name]
        parts = urlsplit(url)
        params = dict(parse_qsl(parts.query))
        assert parts.path == path
        assert params["X-Amz-SignedHeaders"] == "host" and params["X-Amz-Expires"] == "600"
        signature = params["X-Amz-Signature"]
        # our verifier agrees with the URL for what it was made for ...
        assert _signature_for(url, method, path) == signature
        # ... and no other request carries that signature
        others = [
            ("GET", f"/{bucket}/{prefix}/{artifact_key(other)}", None),  # another artifact
            ("PUT", f"/{bucket}/{prefix}/{upload_key(8, 'train', 2, 'model')}", None),  # another run's upload
            ("PUT", f"/{bucket}/{prefix}/{upload_key(7, 'train', 3, 'model')}", None),  # another attempt's
            ("GET", f"/{bucket}/", {"list-type": "2", "prefix": prefix}),  # listing the bucket
            ("GET", f"/{bucket}/", {"list-type": "2"}),
            ("DELETE", path, None),  # another verb on the same object
            ("PUT" if method == "GET" else "GET", path, None),
        ]
        for other_method, other_path, extra in others:
            assert _signature_for(url, other_method, other_path, extra) != signature, (
                other_method,
                other_path,
            )


async def test_an_upload_over_the_limit_is_refused_without_being_downloaded(
    s3_executor: KubernetesExecutor, store: S3ArtifactStore, job: MakeJob, tmp_path: Path
) -> None:
    s3_executor.max_upload_bytes = 100  # a presigned PUT cannot bound the size: the executor does
    out = tmp_path / "node-fs" / "big.bin"
    the_job = job(
        f"mkdir -p {out.parent}; head -c 100000 /dev/urandom > {out}",
        outputs=[OutputDecl("big", str(out), "path")],
    )
    report = await s3_executor.wait(await s3_executor.start(the_job))
    assert report.exit_code == 0 and not report.ok
    assert report.error is not None
    assert (
        report.error.startswith("output 'big': the upload is ") and "(AIHUB_MAX_UPLOAD_BYTES)" in report.error
    )
    uploads = [m["path"] for batch in obstore.list(store.client, prefix="uploads/") for m in batch]  # type: ignore[attr-defined]
    assert uploads == []  # removed
