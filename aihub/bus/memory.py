"""In-process bus: publish delivers straight to this process's subscribers."""

from __future__ import annotations

import time
from typing import Any

from aihub.bus.base import BaseBus, RunEvent


class MemoryBus(BaseBus):
    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, event: RunEvent) -> None:
        if self.metrics is not None:
            self.metrics.observe_publish(time.perf_counter(), ok=True)
        self.deliver(event)

    async def publish_control(self, message: dict[str, Any]) -> None:
        self.deliver_control(message)
