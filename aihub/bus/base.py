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
    """An async iterator of events for one subscriber, with a bounded buffer. ``runs_only``: of every run's
    events only the run-level ones (``node`` is None), e.g. the engine's listener, which would otherwise be
    woken for each node event only to drop it."""

    def __init__(self, bus: BaseBus, run_id: int | None, maxsize: int, runs_only: bool = False) -> None:
        self._bus = bus
        self.run_id = run_id
        self.runs_only = runs_only
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
    def subscribe(
        self, run_id: int | None = None, *, maxsize: int = 10_000, runs_only: bool = False
    ) -> Subscription: ...
    async def publish_control(self, message: dict[str, Any]) -> None: ...
    def on_control(self, handler: ControlHandler) -> None: ...
    def off_control(self, handler: ControlHandler) -> None: ...


class BaseBus:
    """Local fan-out to subscribers; backends only decide how a published event reaches ``deliver``."""

    def __init__(self) -> None:
        self._by_run: dict[int | None, set[Subscription]] = {}
        #: subscribers of every run's run-level events only (``Subscription.runs_only``)
        self._run_level: set[Subscription] = set()
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

    def subscribe(
        self, run_id: int | None = None, *, maxsize: int = 10_000, runs_only: bool = False
    ) -> Subscription:
        """Every event of run ``run_id`` (None: of every run); ``runs_only``: only the run-level events of
        every run (``run_id`` must then be None)."""
        if runs_only and run_id is not None:
            raise ValueError("a subscription of run-level events only is for every run")
        sub = Subscription(self, run_id, maxsize, runs_only)
        if runs_only:
            self._run_level.add(sub)
        else:
            self._by_run.setdefault(run_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.runs_only:
            self._run_level.discard(sub)
            return
        subs = self._by_run.get(sub.run_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_run[sub.run_id]

    def deliver(self, event: RunEvent) -> None:
        for key in (event.run_id, None):
            subs = self._by_run.get(key)
            if subs:
                for sub in list(subs):
                    sub.offer(event)
        if event.node is None and self._run_level:
            for sub in list(self._run_level):
                sub.offer(event)

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._by_run.values()) + len(self._run_level)
