"""Artifacts over HTTP for executors whose nodes run elsewhere (Kubernetes pods).

A pod fetches its input artifacts and uploads its ``path`` outputs with the run-scoped token. A run token
only reaches the artifacts of its own run (its nodes' stored outputs); other tokens must name a run they may
see. Uploads are repacked deterministically, so digests equal what the local executor stores.
"""

from __future__ import annotations

from aihub.db.models import ApiToken, NodeRun, TokenKind
from aihub.services.access import get_run
from aihub.services.errors import Forbidden, NotFound, Unavailable
from aihub.storage.base import ArtifactStore, StoreError


async def checked_artifact(
    token: ApiToken, digest: str, artifacts: ArtifactStore, run_id: int | None = None
) -> str:
    """``digest`` if it is a stored output of the token's run (or of ``run_id`` it may see); else NotFound."""
    if token.kind is TokenKind.RUN:
        run_id = token.run_id  # type: ignore[attr-defined]
    elif run_id is None:
        raise NotFound("name the run the artifact belongs to (?run=ID)", field="run")
    else:
        await get_run(token.user, run_id)
    outputs = await NodeRun.filter(run_id=run_id).values_list("outputs", flat=True)
    if not any(o.get("digest") == digest for out in outputs for o in (out or {}).values()):
        raise NotFound(f"artifact {digest} not found", field="digest")
    if not await is_stored(artifacts, digest):
        raise NotFound(f"artifact {digest} not found", field="digest")
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
        raise Forbidden("only a run's own token can upload its outputs", field="Authorization")
