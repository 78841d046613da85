"""A 2,000-node workflow (20 layers x 100, node i -> node i of the next layer, plus a fan-in) on the run and
version pages: bounded page size, every node reachable, one node's change sends only that node's fragment."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aihub.app import create_app
from aihub.bus.base import RunEvent
from aihub.db.models import NodeRun, User
from aihub.domain.status import NodeStatus
from aihub.services.runs import create_run
from aihub.services.users import create_user
from aihub.services.workflows import create_workflow
from aihub.settings import Settings
from aihub.web.live import _changes, run_context
from bench.web import big_spec
from tests.web.webapp import PASSWORD, USERS, Web

NODES = 20 * 100 + 1
#: a naive drawing (one <svg> and one <path> per node and edge) is over 900 kB and 4,000 elements
MAX_BYTES = 60_000
MAX_SVG = 100


@pytest.fixture
async def web(settings: Settings) -> AsyncIterator[Web]:
    """The app without its engine: the run is created and its nodes stay WAITING until a test changes one."""
    app = create_app(settings, run_engine=False)
    async with app.router.lifespan_context(app):
        for name, team, leader in USERS:
            await create_user(name, PASSWORD, team=team, leader=leader)
        web = Web(app, settings)
        try:
            yield web
        finally:
            for http in web.clients:
                await http.aclose()


@pytest.fixture
async def big(web: Web) -> dict[str, Any]:
    alice = await User.get(username="alice")
    version = await create_workflow(alice, big_spec(20, 100))
    run = await create_run(web.rt.bus, alice, version.id, name="big")
    return {"version": version, "run": run, "user": alice}


def _counts(html: str) -> tuple[int, int, int]:
    return len(html.encode()), html.count("<svg"), html.count("<path")


async def test_the_run_page_of_2000_nodes_is_bounded(web: Web, big: dict[str, Any]) -> None:
    client = await web.client("alice")
    response = await client.get(f"/runs/{big['run'].id}")
    assert response.status_code == 200
    size, svgs, paths = _counts(response.text)
    assert size < MAX_BYTES, size
    assert svgs < MAX_SVG, svgs
    assert paths < MAX_SVG, paths
    # the wide layers are summary boxes (live), the single fan-in node is drawn as itself
    assert 'sse-swap="group-0"' in response.text
    assert 'id="node-fan_in"' in response.text
    assert 'id="node-n00_000"' not in response.text


async def test_the_version_page_of_2000_nodes_is_bounded(web: Web, big: dict[str, Any]) -> None:
    client = await web.client("alice")
    response = await client.get(f"/versions/{big['version'].id}")
    assert response.status_code == 200
    size, svgs, paths = _counts(response.text)
    assert size < MAX_BYTES, size
    assert svgs < MAX_SVG and paths < MAX_SVG, (svgs, paths)
    assert 'id="spec-more"' in response.text


async def test_every_node_is_reachable_from_the_run_page(web: Web, big: dict[str, Any]) -> None:
    """Every summary box lists its nodes; every listed node opens its panel; together they cover the graph."""
    client = await web.client("alice")
    run_id = big["run"].id
    page = (await client.get(f"/runs/{run_id}")).text
    reachable = set(re.findall(r'id="node-(\w+)" class="node', page))
    groups = sorted({int(g) for g in re.findall(r'hx-get="/runs/\d+/groups/(\d+)"', page)})
    assert groups
    for index in groups:
        listing = await client.get(f"/runs/{run_id}/groups/{index}", htmx=True)
        assert listing.status_code == 200
        hrefs = re.findall(rf'hx-get="/runs/{run_id}/nodes/(\w+)"', listing.text)
        reachable.update(hrefs)
    assert len(reachable) == NODES
    panel = await client.get(f"/runs/{run_id}/nodes/n13_042", htmx=True)
    assert panel.status_code == 200 and "n13_042" in panel.text
    assert (await client.get(f"/runs/{run_id}/groups/{len(groups) + 5}", htmx=True)).status_code == 404


async def test_every_node_is_reachable_from_the_version_page(web: Web, big: dict[str, Any]) -> None:
    client = await web.client("alice")
    version_id = big["version"].id
    page = (await client.get(f"/versions/{version_id}")).text
    reachable = set(re.findall(r'id="node-(\w+)" class="node', page))
    for index in sorted({int(g) for g in re.findall(r'hx-get="/versions/\d+/groups/(\d+)"', page)}):
        listing = (await client.get(f"/versions/{version_id}/groups/{index}", htmx=True)).text
        reachable.update(re.findall(rf'hx-get="/versions/{version_id}/nodes/(\w+)"', listing))
    assert len(reachable) == NODES


async def _until_synced(stream: Any) -> str:
    seen = ""
    while "event: synced" not in seen:
        seen += await anext(stream)
    return seen


@pytest.mark.parametrize(
    ("node", "events"),
    [("n10_050", ["chip-n10_050", "group-10"]), ("fan_in", ["node-fan_in"])],
)
async def test_a_node_change_sends_only_that_node(
    web: Web, big: dict[str, Any], node: str, events: list[str]
) -> None:
    user, run_id = big["user"], big["run"].id
    graph = (await run_context(user, run_id))["graph"]
    stream = _changes(web.rt, user, run_id, graph, "csrf")
    try:
        snapshot = await _until_synced(stream)
        # a fresh run: the snapshot is the header and the summary boxes, not 2,000 waiting nodes
        assert len(snapshot.encode()) < MAX_BYTES
        await NodeRun.filter(run_id=run_id, name=node).update(status=NodeStatus.RUNNING)
        await web.rt.bus.publish(RunEvent(run_id, "RUNNING", node=node, node_status="RUNNING"))
        update = await anext(stream)
    finally:
        await stream.aclose()
    assert re.findall(r"^event: (\S+)$", update, re.M) == events
    assert len(update.encode()) < 2_000, len(update)
    assert 'data-status="RUNNING"' in update
    names = set(re.findall(r"n\d\d_\d\d\d|fan_in", update))
    assert names == {node}
    if node != "fan_in":
        assert "1 running" in update  # the summary box counts it
