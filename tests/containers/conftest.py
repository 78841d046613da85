"""Session fixtures of the container tests: one engine, one busybox base image and one registry per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.containers.support import Engine, Registry, ensure_busybox_image, find_engine, local_registry
from tests.modules.conftest import make_repo  # noqa: F401  (the module tests' git repositories)


@pytest.fixture(scope="session")
def container_engine() -> Engine:
    """podman (or docker) that really runs containers here; the tests skip, saying why, where there is none."""
    engine, reason = find_engine()
    if engine is None:
        pytest.skip(reason)
    return engine


@pytest.fixture(scope="session")
def busybox_image(container_engine: Engine) -> str:
    """The offline busybox base image (imported once from a tarball cached under ~/.cache/aihub-tests)."""
    return ensure_busybox_image(container_engine)


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    """A plain-HTTP registry on 127.0.0.1 (Debian's docker-registry), empty at the start of the session."""
    with local_registry() as reg:
        yield reg
