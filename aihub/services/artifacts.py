"""Artifacts over HTTP for executors whose nodes run elsewhere (Kubernetes pods).

A pod fetches its input artifacts and uploads its ``path`` outputs with the run-scoped token. A run token
only reaches the artifacts of its own run (its nodes' stored outputs); other tokens must name a run they may
see. Uploads are repacked deterministically, so digests equal what the local executor stores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from aihub.db.models import ApiToken, NodeRun, TokenKind
from aihub.domain.messages import msg
from aihub.services.access import get_run
from aihub.services.errors import Forbidden, InvalidInput, NotFound, Unavailable
from aihub.storage.base import ArtifactStore, StoreError


class UploadRepacker(Protocol):
    """Turns an uploaded ``path`` output (a tar.gz) into a stored artifact the way the engine stores its own
    outputs; returns (digest, size). Raises :class:`InvalidInput` for an upload it refuses (unsafe, or not the
    kind it claims), :class:`StoreError` when the store does not answer. The engine supplies it (runtime.py)."""

    async def __call__(
        self, upload: Path, kind: Literal["file", "dir"], artifacts: ArtifactStore
    ) -> tuple[str, int]: ...


async def checked_artifact(
    token: ApiToken, digest: str, artifacts: ArtifactStore, run_id: int | None = None
) -> str:
    """``digest`` if it is a stored output of the token's run (or of ``run_id`` it may see); else NotFound."""
    if token.kind is TokenKind.RUN:
        run_id = token.run_id  # type: ignore[attr-defined]
    elif run_id is None:
        raise NotFound(msg("name the run the artifact belongs to (?run=ID)"), field="run")
    else:
        await get_run(token.user, run_id)
    outputs = await NodeRun.filter(run_id=run_id).values_list("outputs", flat=True)
    if not any(o.get("digest") == digest for out in outputs for o in (out or {}).values()):
        raise NotFound(msg("artifact {digest} not found", digest=digest), field="digest")
    if not await is_stored(artifacts, digest):
        raise NotFound(msg("artifact {digest} not found", digest=digest), field="digest")
    return digest


async def is_stored(artifacts: ArtifactStore, digest: str) -> bool:
    """Whether the store holds ``digest``; a store that does not answer is :class:`Unavailable`."""
    try:
        return await artifacts.exists(digest)
    except StoreError as exc:
        raise Unavailable(str(exc)) from exc


def check_uploader(token: ApiToken) -> None:
    """Only a node of an active run uploads outputs."""
    if token.kind is not TokenKind.RUN:
        raise Forbidden(msg("only a run's own token can upload its outputs"), field="Authorization")


def check_upload(token: ApiToken, kind: str | None) -> Literal["file", "dir"]:
    """Whether ``token`` may upload an output of ``kind`` (asked before the body is read); the kind."""
    check_uploader(token)
    if kind != "file" and kind != "dir":
        raise InvalidInput(msg("kind must be 'file' or 'dir'"), field="kind")
    return kind


async def store_upload(
    token: ApiToken, upload: Path, kind: str | None, artifacts: ArtifactStore, repack: UploadRepacker
) -> tuple[str, int]:
    """Store an output a node of the token's run uploaded; (digest, size) of the stored archive."""
    checked = check_upload(token, kind)
    try:
        return await repack(upload, checked, artifacts)
    except StoreError as exc:
        raise Unavailable(str(exc)) from exc
