"""The live run page's SSE targets."""

from __future__ import annotations

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
