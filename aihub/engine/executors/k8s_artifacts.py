"""Artifacts between the store and a Kubernetes attempt's pod.

Before the pod starts, the executor reads the kind (file or directory) of each input artifact, which the
pod's wrapper needs to unpack it, and, when the store is an object store, asks it for the attempt's
presigned URLs. After a node's command, the wrapper uploads each ``path`` output to the platform's API,
which stores it with :func:`store_uploaded_output` (an upload through a presigned URL is fetched and stored
the same way by :mod:`aihub.engine.executors.k8s_outputs`).
"""

from __future__ import annotations

import asyncio
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Literal

from aihub.engine.artifacts import ArtifactError, pack, unpack
from aihub.engine.executors.base import Job
from aihub.engine.executors.k8s_pod import LaunchError
from aihub.services.errors import InvalidInput
from aihub.storage.base import ArtifactMissing, ArtifactStore, StoreError

__all__ = ["archive_kind", "input_kinds", "presigned_urls", "repack_upload", "store_uploaded_output"]

_ROOT_KIND_KEY = "AIHUB.root"  # the pax header aihub.engine.artifacts.pack writes: "file" or "dir"


async def input_kinds(artifacts: ArtifactStore, job: Job) -> dict[str, Literal["file", "dir"]]:
    """Whether each input artifact of ``job`` holds a file or a directory; :class:`LaunchError` if one is
    missing or unreadable."""
    kinds: dict[str, Literal["file", "dir"]] = {}
    for art in job.artifacts_in:
        try:
            async with artifacts.open(art.digest) as archive:
                kinds[art.name] = await asyncio.to_thread(archive_kind, archive)
        except (ArtifactMissing, StoreError) as exc:
            raise LaunchError(f"input '{art.name}': {exc}") from None
        except (OSError, tarfile.TarError) as exc:
            raise LaunchError(f"input '{art.name}': artifact {art.digest} is unreadable: {exc}") from exc
    return kinds


async def presigned_urls(artifacts: ArtifactStore, job: Job, seconds: float) -> dict[str, str]:
    """The attempt's presigned URLs when the store gives them (an object store; see aihub.storage.s3)."""
    if not getattr(artifacts, "presigns", False):
        return {}
    key = job.key
    try:
        return await artifacts.attempt_urls(  # type: ignore[attr-defined, no-any-return]
            key.run_id,
            key.node,
            key.attempt,
            {art.name: art.digest for art in job.artifacts_in},
            [out.name for out in job.outputs if out.type == "path"],
            seconds,
        )
    except StoreError as exc:
        raise LaunchError(str(exc)) from exc


async def store_uploaded_output(
    upload: Path, kind: Literal["file", "dir"], artifacts: ArtifactStore
) -> tuple[str, int]:
    """Store a ``path`` output a pod uploaded (a tar.gz of a directory's contents, or of one file);
    returns (digest, size) of the stored archive. Raises :class:`ArtifactError` for a refused upload.

    The upload is unpacked safely and packed again with :func:`aihub.engine.artifacts.pack`, so the stored
    bytes are deterministic and equal to what the local executor stores for the same content.
    """
    if kind not in ("file", "dir"):
        raise ArtifactError(f"unknown output kind {kind!r}")
    work = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=".upload-", dir=upload.parent))
    try:
        archive = await asyncio.to_thread(_repack, upload, kind, work)
        return await artifacts.put_file(archive)
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)


async def repack_upload(
    upload: Path, kind: Literal["file", "dir"], artifacts: ArtifactStore
) -> tuple[str, int]:
    """:func:`store_uploaded_output` as the services' :class:`~aihub.services.artifacts.UploadRepacker`: a
    refused upload is :class:`InvalidInput`."""
    try:
        return await store_uploaded_output(upload, kind, artifacts)
    except ArtifactError as exc:
        raise InvalidInput(str(exc), field="body") from exc


def _repack(upload: Path, kind: str, work: Path) -> Path:
    root = work / "root"
    unpack(upload, root)
    source = root
    if kind == "file" and root.is_dir():
        entries = list(root.iterdir())
        if len(entries) != 1 or entries[0].is_symlink() or not entries[0].is_file():
            raise ArtifactError("the upload of a file output must hold exactly one regular file")
        source = entries[0]
    archive = work / "packed.tar.gz"
    pack(source, archive)
    return archive


def archive_kind(archive: Path) -> Literal["file", "dir"]:
    """Whether an archive made by :func:`aihub.engine.artifacts.pack` holds a file or a directory."""
    with tarfile.open(archive, "r|gz") as tar:
        tar.next()
        return "file" if tar.pax_headers.get(_ROOT_KIND_KEY) == "file" else "dir"
