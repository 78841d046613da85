"""Event bus: ``memory`` (in-process, default) or ``kafka``."""

from __future__ import annotations

from aihub.bus.base import Bus, RunEvent, SubscriberTooSlow, Subscription
from aihub.settings import Settings

__all__ = ["Bus", "RunEvent", "SubscriberTooSlow", "Subscription", "build_bus"]


def build_bus(settings: Settings) -> Bus:
    if settings.bus == "kafka":
        from aihub.bus.kafka import KafkaBus

        return KafkaBus(settings.kafka_bootstrap, settings.kafka_topic_prefix)
    from aihub.bus.memory import MemoryBus

    return MemoryBus()
