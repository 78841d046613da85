"""Where artifacts and logs live: the protocols (``base``) and the local-disk implementation (``local``).

``build_storage(settings)`` gives the default stores under ``settings.data_dir``; a shared store (object
storage, a network filesystem) implements the same two protocols.
"""

from aihub.storage.base import ArtifactStore, DoneCheck, LogStore
from aihub.storage.local import LocalArtifactStore, LocalLogStore, build_storage

__all__ = ["ArtifactStore", "DoneCheck", "LocalArtifactStore", "LocalLogStore", "LogStore", "build_storage"]
