"""Where artifacts and logs live: the protocols (``base``), local disk (``local``, the default) and an
S3-compatible object store (``s3``, ``AIHUB_ARTIFACT_STORE=s3://BUCKET/PREFIX``).

``build_storage(settings)`` gives the stores the settings name.
"""

from aihub.storage.base import (
    ArtifactCorrupt,
    ArtifactMissing,
    ArtifactStore,
    DoneCheck,
    LogStore,
    StoreError,
)
from aihub.storage.local import LocalArtifactStore, LocalLogStore, build_storage

__all__ = [
    "ArtifactCorrupt",
    "ArtifactMissing",
    "ArtifactStore",
    "DoneCheck",
    "LocalArtifactStore",
    "LocalLogStore",
    "LogStore",
    "StoreError",
    "build_storage",
]
