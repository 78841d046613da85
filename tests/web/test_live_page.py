"""The live run page's SSE targets."""

from __future__ import annotations

import re

from aihub.db.models import User
from aihub.services.workflows import create_workflow
from tests.engine.support import wait_for_run
from tests.web.webapp import Web, example


async def test_live_targets_listen_again_as_soon_as_they_are_swapped(web: Web) -> None:
    """Hazard: htmx registers a swapped-in element's ``sse-swap`` listener only when it settles (20 ms later by
    default); a node that goes RUNNING -> SUCCEEDED within that time lost its last event and stayed blue."""
    client = await web.client("alice")
    version = await create_workflow(await User.get(username="alice"), example())
    response = await client.post(f"/versions/{version.id}/run", {"name": "live"})
    run_id = int(response.headers["location"].rsplit("/", 1)[1])
    await wait_for_run(web.rt, run_id)
    page = (await client.get(f"/runs/{run_id}")).text
    for target in ("node-step1", "node-step2", "run"):
        assert f'sse-swap="{target}" hx-swap="outerHTML settle:0ms"' in page


async def test_a_node_change_refreshes_its_open_panel_and_the_timeline(web: Web) -> None:
    """Everything on the run page follows the run: the open node panel (but not a live log tail, which
    streams itself) and the timeline refetch themselves on the events the live stream sends."""
    from aihub.bus.base import RunEvent
    from aihub.web.live import _changes, run_context

    alice = await User.get(username="alice")
    client = await web.client("alice")
    version = await create_workflow(alice, example())
    response = await client.post(f"/versions/{version.id}/run", {"name": "live"})
    run_id = int(response.headers["location"].rsplit("/", 1)[1])
    await wait_for_run(web.rt, run_id)
    details = (await client.get(f"/runs/{run_id}/nodes/step1?tab=details", htmx=True)).text
    assert 'hx-trigger="sse:panel-step1"' in details
    logs = (await client.get(f"/runs/{run_id}/nodes/step1?tab=logs", htmx=True)).text
    assert "sse:panel-step1" not in logs
    page = (await client.get(f"/runs/{run_id}")).text
    assert 'hx-trigger="sse:timeline' not in page  # the run has ended: nothing left to refresh

    stream = _changes(web.rt, alice, run_id, (await run_context(alice, run_id))["graph"], "csrf")
    try:
        while "event: synced" not in await anext(stream):
            pass
        await web.rt.bus.publish(RunEvent(run_id, "SUCCEEDED", node="step1", node_status="SUCCEEDED"))
        node_chunk, refresh_chunk = await anext(stream), await anext(stream)
    finally:
        await stream.aclose()
    assert "event: node-step1" in node_chunk
    assert re.findall(r"^event: (\S+)$", refresh_chunk, re.M) == ["panel-step1", "timeline"]


async def test_details_tab_says_the_local_executor_does_not_use_the_image(web: Web) -> None:
    """A newcomer reads a node's ``image`` in its details and must not believe the command ran in it."""
    client = await web.client("alice")
    version = await create_workflow(await User.get(username="alice"), example())
    response = await client.post(f"/versions/{version.id}/run", {"name": "image"})
    run_id = int(response.headers["location"].rsplit("/", 1)[1])
    await wait_for_run(web.rt, run_id)
    details = (await client.get(f"/runs/{run_id}/nodes/step1?tab=details", htmx=True)).text
    image = details[details.index('id="node-image"') :]
    assert "python:3.11-slim" in image.split("</dd>")[0]
    assert "the image is not used" in image.split("</dd>")[0]
    web.settings.executor = "kubernetes"  # only what the page says depends on it: nothing runs any more
    details = (await client.get(f"/runs/{run_id}/nodes/step1?tab=details", htmx=True)).text
    assert "python:3.11-slim" in details and "the image is not used" not in details
