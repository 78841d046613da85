"""The Kubernetes executor's readiness check (``/readyz``, issue 20): a pod listing in its namespace, now."""

from __future__ import annotations

import asyncio

import pytest

from aihub.engine.executors.kubernetes import KubernetesExecutor
from tests.k8s.emulator import Emulator


async def test_ready_while_the_api_server_answers(executor: KubernetesExecutor, emulator: Emulator) -> None:
    await executor.ready()
    await emulator.close()
    with pytest.raises(Exception) as failed:
        async with asyncio.timeout(30):
            await executor.ready()
    assert not isinstance(failed.value, TimeoutError), "the check hung instead of failing"
