"""The live run feed that the web page's SSE stream and GraphQL's ``runEvents`` both send: a snapshot of the run
and its nodes (parents first), then every change the bus carries.

The feed subscribes to the bus *before* it reads the snapshot, so no change between the read and the first
live event is lost (at worst one arrives twice, which a status view absorbs). Each feed has its own bounded
buffer on the bus: one that falls behind raises :class:`~aihub.bus.base.SubscriberTooSlow` from its events
(GraphQL ends the stream with that error, the web page resubscribes and resyncs). How the feed is shown — SVG
boxes or GraphQL objects, keep-alives, token re-checks — is the adapters' part.

A live log needs to know when its attempt is over: :class:`AttemptWatch` learns it from the bus (the rule is
``domain.status.attempt_over``), and asks the database only when its buffer overflowed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aihub.bus.base import RunEvent, SubscriberTooSlow, Subscription
from aihub.domain.status import RunStatus, attempt_over
from aihub.services import queries
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


class AttemptWatch:
    """Knows when one attempt of a node is over, from bus events (the database only after a dropped buffer)."""

    def __init__(self, sub: Subscription, run_id: int, node: str, number: int) -> None:
        self.sub, self.run_id, self.node, self.number = sub, run_id, node, number
        self.over = asyncio.Event()
        self.lost_events = False
        self.task: asyncio.Task[None] | None = None

    def judge(self, attempt: int, node_status: str, run_status: str) -> None:
        if attempt_over(self.number, attempt, node_status, run_status):
            self.over.set()

    async def watch(self) -> None:
        try:
            async for event in self.sub:
                if event.node == self.node:
                    self.judge(event.attempt or 0, event.node_status or "", event.run_status)
                elif event.node is None and RunStatus(event.run_status).is_terminal:
                    self.over.set()
                if self.over.is_set():
                    return
        except SubscriberTooSlow:
            self.lost_events = True

    async def check_database(self) -> None:
        if await queries.attempt_log_finished(self.run_id, self.node, self.number):
            self.over.set()

    async def done(self) -> bool:
        if not self.over.is_set() and self.lost_events:
            await self.check_database()
        return self.over.is_set()


@asynccontextmanager
async def open_attempt_watch(
    bus: Bus, user: User, run_id: int, node: str, attempt: int | None, *, maxsize: int
) -> AsyncIterator[AttemptWatch]:
    """A running watch of an attempt (default: the node's current one) of a node ``user`` may see (else
    NotFound), for a live log: subscribed before the node is read, so its end cannot slip between the two."""
    sub = bus.subscribe(run_id, maxsize=maxsize)
    watch: AttemptWatch | None = None
    try:
        run, row = await queries.get_node(user, run_id, node)
        number = attempt or max(row.attempt, 1)
        watch = AttemptWatch(sub, run_id, node, number)
        watch.judge(row.attempt, row.status.value, run.status.value)
        watch.task = asyncio.create_task(watch.watch(), name=f"watch logs {run_id}/{node}/{number}")
        yield watch
    finally:
        sub.close()
        if watch is not None and watch.task is not None:
            watch.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch.task
