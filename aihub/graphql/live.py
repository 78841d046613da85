"""Live views over ``graphql-transport-ws``: ``runEvents`` and ``nodeLogs``.

``runEvents`` sends the run feed of ``aihub.services.live`` (the one the web page's SSE stream sends too);
``nodeLogs`` follows a log until the service's :class:`AttemptWatch` says its attempt is over. Each subscriber has its own bounded buffer on the bus: a
client that falls behind gets a ``SUBSCRIBER_TOO_SLOW`` error and is dropped, while the engine and the other
clients carry on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import strawberry

from aihub.bus.base import RunEvent, Subscription
from aihub.domain.messages import msg
from aihub.domain.status import NodeStatus, RunStatus
from aihub.graphql.context import Info
from aihub.graphql.prebuilt import BuiltCache, Plan, Plans, Prebuilt
from aihub.graphql.types.common import NodeStatusEnum, RunStatusEnum, parse_id
from aihub.services.auth import Unauthenticated, authenticate
from aihub.services.errors import InvalidInput
from aihub.services.files import follow_log
from aihub.services.live import open_attempt_watch, open_run_feed


@strawberry.type(name="RunEvent")
class RunEventType:
    run_id: strawberry.ID
    run_status: RunStatusEnum
    node: str | None = strawberry.field(description="null for run-level events")
    node_status: NodeStatusEnum | None
    retry_count: int
    attempt: int | None
    message: str
    snapshot: bool = strawberry.field(description="part of the snapshot sent first")

    @classmethod
    def from_event(cls, event: RunEvent, *, snapshot: bool = False) -> RunEventType:
        return cls(
            run_id=strawberry.ID(str(event.run_id)),
            run_status=RunStatus(event.run_status),
            node=event.node,
            node_status=NodeStatus(event.node_status) if event.node_status else None,
            retry_count=event.retry_count,
            attempt=event.attempt,
            message=event.message,
            snapshot=snapshot,
        )


@strawberry.type(name="LogLine")
class LogLineType:
    text: str


#: a plain selection of ``runEvents`` is built by hand, once per live event for all its subscribers
#: (``aihub.graphql.prebuilt``)
EVENT_PLANS = Plans()
BUILT_EVENTS = BuiltCache()


def live_event(plan: Plan | None, event: RunEvent) -> RunEventType:
    """What ``runEvents`` yields for a live event: its built answer when the selection is plain."""
    if plan is None:
        return RunEventType.from_event(event)
    return Prebuilt(BUILT_EVENTS.get(event, plan, RunEventType.from_event))  # type: ignore[return-value]


#: how often an open subscription checks that its token still works (revoked, expired, run ended)
REAUTHORISE_SECONDS = 5.0
#: the marker that wakes an idle subscription for that check (never sent to the client)
RECHECK = RunEvent(run_id=0, run_status="")


class TokenCheck:
    """Re-checks a subscription's token at most every ``REAUTHORISE_SECONDS``: a token revoked, expired or
    (a run token) whose run ended stops the stream with UNAUTHENTICATED."""

    def __init__(self, info: Info) -> None:
        self.info = info
        self.loop = asyncio.get_running_loop()
        self.check_at = self.loop.time() + REAUTHORISE_SECONDS

    async def ensure(self) -> None:
        """Raise :class:`Unauthenticated` when a check is due and the token no longer works."""
        if self.loop.time() < self.check_at:
            return
        token = self.info.context.token
        if not token or await authenticate(token) is None:
            raise Unauthenticated(msg("the token of this subscription is no longer valid"), field="token")
        self.check_at = self.loop.time() + REAUTHORISE_SECONDS


async def while_authorised(info: Info, sub: Subscription) -> AsyncGenerator[RunEvent, None]:
    """The subscription's events for as long as the connection's token stays valid (see :class:`TokenCheck`),
    checked even while no event arrives: a timer puts a ``RECHECK`` marker in the subscription's buffer every
    ``REAUTHORISE_SECONDS`` (a timeout around each wait cost every subscriber of every event a timer: issue 18)."""
    check = TokenCheck(info)
    loop = asyncio.get_running_loop()

    def tick() -> None:
        nonlocal timer
        sub.offer(RECHECK)
        timer = loop.call_later(REAUTHORISE_SECONDS, tick)

    timer = loop.call_later(REAUTHORISE_SECONDS, tick)
    try:
        async for event in sub:
            if event is not RECHECK:
                yield event
            if loop.time() >= check.check_at:  # the check's own test, without a coroutine per event
                await check.ensure()
    finally:
        timer.cancel()


@strawberry.type
class LiveSubscription:
    @strawberry.subscription(
        description="the run and each node's status first (parents first), then every change"
    )
    async def run_events(self, info: Info, run_id: strawberry.ID) -> AsyncGenerator[RunEventType, None]:
        user = info.context.require_user()
        rid = parse_id(run_id, "runId")
        plan = EVENT_PLANS.for_info(info)
        bus, buffer = info.context.runtime.bus, info.context.subscriber_buffer
        async with open_run_feed(bus, user, rid, maxsize=buffer) as feed:
            for event in feed.snapshot_events():
                if plan is None:
                    yield RunEventType.from_event(event, snapshot=True)
                else:
                    yield Prebuilt(plan.build(RunEventType.from_event(event, snapshot=True)))  # type: ignore[misc]
            async for event in while_authorised(info, feed.events):
                yield live_event(plan, event)

    @strawberry.subscription(
        description="an attempt's log lines from the start, then live; ends with the attempt"
    )
    async def node_logs(
        self, info: Info, run_id: strawberry.ID, node: str, attempt: int | None = None
    ) -> AsyncGenerator[LogLineType, None]:
        user = info.context.require_user()
        rid = parse_id(run_id, "runId")
        if attempt is not None and attempt < 1:
            raise InvalidInput(
                msg("attempt must be at least 1 (got {value})", value=attempt), field="attempt"
            )
        bus, buffer = info.context.runtime.bus, info.context.subscriber_buffer
        async with open_attempt_watch(bus, user, rid, node, attempt, maxsize=buffer) as watch:
            check = TokenCheck(info)

            async def done() -> bool:
                # called on every poll of the log, so an idle stream is re-checked too
                await check.ensure()
                return await watch.done()

            async for line in follow_log(info.context.runtime.logs, rid, node, watch.number, done=done):
                await check.ensure()
                yield LogLineType(text=line)
