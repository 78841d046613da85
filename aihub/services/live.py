"""The live run feed that the web page's SSE stream and GraphQL's ``runEvents`` both send: a snapshot of the run
and its nodes (parents first), then every change the bus carries.

The feed subscribes to the bus *before* it reads the snapshot, so no change between the read and the first
live event is lost (at worst one arrives twice, which a status view absorbs). Each feed has its own bounded
buffer on the bus: one that falls behind raises :class:`~aihub.bus.base.SubscriberTooSlow` from its events
(GraphQL ends the stream with that error, the web page resubscribes and resyncs). How the feed is shown — SVG
boxes or GraphQL objects, keep-alives, token re-checks — is the adapters' part.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aihub.bus.base import RunEvent, Subscription
from aihub.services.queries import run_snapshot

if TYPE_CHECKING:
    from aihub.bus.base import Bus
    from aihub.db.models import NodeRun, Run, User


@dataclass
class RunFeed:
    """An open feed of one run: the snapshot read after subscribing, and the live events that follow it."""

    run: Run
    #: the run's nodes in topological order (parents first)
    nodes: list[NodeRun]
    #: the live events after the snapshot (a bounded buffer of its own)
    events: Subscription

    def snapshot_events(self) -> list[RunEvent]:
        """The snapshot as events: the run's first, then each node's, parents first."""
        run = self.run
        first = RunEvent(run.id, run.status.value, retry_count=run.retry_count, message=run.message)
        return [first] + [
            RunEvent(
                run.id, run.status.value, n.name, n.status.value, n.retry_count, n.attempt or None, n.message
            )
            for n in self.nodes
        ]


@asynccontextmanager
async def open_run_feed(
    bus: Bus, user: User, run_id: int, *, maxsize: int | None = None
) -> AsyncIterator[RunFeed]:
    """The feed of a run ``user`` may see (else NotFound); its subscription is closed on leaving."""
    sub = bus.subscribe(run_id) if maxsize is None else bus.subscribe(run_id, maxsize=maxsize)
    try:
        run, nodes = await run_snapshot(user, run_id)
        yield RunFeed(run, nodes, sub)
    finally:
        sub.close()
