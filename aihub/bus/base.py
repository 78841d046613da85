"""The event bus: every persisted status change is published here; live views subscribe.

``memory`` delivers in-process; ``kafka`` carries the same events between processes. A subscriber has a
bounded buffer: one that falls behind is told (``SubscriberTooSlow``) and dropped, so a slow client never
blocks the engine or other clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aihub.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunEvent:
    """A run-level (``node`` is None) or node-level status change."""

    run_id: int
    run_status: str
    node: str | None = None
    node_status: str | None = None
    retry_count: int = 0
    attempt: int | None = None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RunEvent:
        return cls(**{k: raw.get(k) for k in cls.__dataclass_fields__ if k in raw})


class SubscriberTooSlow(Exception):
    """Raised in a subscriber whose buffer overflowed; it must resubscribe (and re-read a snapshot)."""


_OVERFLOW = object()


class Subscription:
    """An async iterator of events for one subscriber, with a bounded buffer."""

    def __init__(self, bus: BaseBus, run_id: int | None, maxsize: int) -> None:
        self._bus = bus
        self.run_id = run_id
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=maxsize + 1)
        self._maxsize = maxsize
        self.dropped = False

    def offer(self, event: RunEvent) -> None:
        if self.dropped:
            return
        if self._queue.qsize() >= self._maxsize:
            self.dropped = True
            self._queue.put_nowait(_OVERFLOW)
            return
        self._queue.put_nowait(event)

    def __aiter__(self) -> AsyncIterator[RunEvent]:
        return self

    async def __anext__(self) -> RunEvent:
        item = await self._queue.get()
        if item is _OVERFLOW:
            self.close()
            raise SubscriberTooSlow(f"subscriber fell more than {self._maxsize} events behind")
        return item

    def close(self) -> None:
        self._bus.unsubscribe(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


#: receives the control messages of every process (``{"control": KIND, ...}``); must not block
ControlHandler = Callable[[dict[str, Any]], None]


class Bus(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def publish(self, event: RunEvent) -> None: ...
    def subscribe(self, run_id: int | None = None, *, maxsize: int = 10_000) -> Subscription: ...
    async def publish_control(self, message: dict[str, Any]) -> None: ...
    def on_control(self, handler: ControlHandler) -> None: ...
    def off_control(self, handler: ControlHandler) -> None: ...


class BaseBus:
    """Local fan-out to subscribers; backends only decide how a published event reaches ``deliver``."""

    def __init__(self) -> None:
        self._by_run: dict[int | None, set[Subscription]] = {}
        #: where publishes and delivery lag are counted (``/metrics``); the runtime sets it
        self.metrics: Metrics | None = None
        self._control: list[ControlHandler] = []

    def on_control(self, handler: ControlHandler) -> None:
        """Call ``handler`` with every control message, this process's own included (cache invalidations:
        a control message is never a run event and never reaches run subscribers)."""
        self._control.append(handler)

    def off_control(self, handler: ControlHandler) -> None:
        with contextlib.suppress(ValueError):
            self._control.remove(handler)

    def deliver_control(self, message: dict[str, Any]) -> None:
        for handler in list(self._control):
            try:
                handler(message)
            except Exception:
                log.exception("a control handler failed on %r", message)

    def subscribe(self, run_id: int | None = None, *, maxsize: int = 10_000) -> Subscription:
        sub = Subscription(self, run_id, maxsize)
        self._by_run.setdefault(run_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._by_run.get(sub.run_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_run[sub.run_id]

    def deliver(self, event: RunEvent) -> None:
        for key in (event.run_id, None):
            for sub in list(self._by_run.get(key, ())):
                sub.offer(event)

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._by_run.values())
