"""The live run feed (``aihub.services.live``) that the web page's SSE stream and GraphQL's ``runEvents`` share:
it subscribes before it reads the snapshot (a change made in between is in the live events, not lost), the
snapshot lists the run then its nodes parents first, an unseen run is NotFound, and the subscription is closed
on leaving."""

from __future__ import annotations

import pytest

from aihub.bus.memory import MemoryBus
from aihub.db.models import NodeRun, Run
from aihub.domain.status import NodeStatus
from aihub.services.errors import NotFound
from aihub.services.live import open_run_feed
from aihub.services.runs import create_run
from aihub.services.status import transition_node
from aihub.services.users import create_user
from aihub.services.workflows import create_workflow
from aihub.settings import Settings

#: declared children first, so the snapshot's order is the graph's, not the declaration's
SPEC = {
    "name": "wf",
    "nodes": [
        {"name": "child", "command": "true", "depends_on": ["parent"]},
        {"name": "parent", "command": "true"},
    ],
}


async def test_the_snapshot_then_the_changes_made_after_subscribing(db: Settings) -> None:
    bus = MemoryBus()
    alice = await create_user("alice", "alice-password-1")
    run = await create_run(bus, alice, (await create_workflow(alice, SPEC)).id)
    async with open_run_feed(bus, alice, run.id, maxsize=16) as feed:
        snapshot = feed.snapshot_events()
        assert [(e.node, e.node_status) for e in snapshot] == [
            (None, None),
            ("parent", "WAITING"),
            ("child", "WAITING"),
        ]
        assert snapshot[0].run_status == run.status.value and bus.subscriber_count == 1
        # a change after the snapshot was read arrives as a live event
        parent = await NodeRun.get(run_id=run.id, name="parent")
        await transition_node(bus, await Run.get(id=run.id), parent, NodeStatus.SKIPPED, kind="skipped")
        event = await anext(feed.events)
        assert (event.node, event.node_status) == ("parent", "SKIPPED")
    assert bus.subscriber_count == 0


async def test_a_run_the_user_may_not_see_is_not_found_and_leaves_no_subscriber(db: Settings) -> None:
    bus = MemoryBus()
    alice = await create_user("alice", "alice-password-1")
    bob = await create_user("bob", "bob-password-12", team="other")
    run = await create_run(bus, alice, (await create_workflow(alice, SPEC)).id)
    with pytest.raises(NotFound):
        async with open_run_feed(bus, bob, run.id):
            pass
    assert bus.subscriber_count == 0
