"""Issue 21 on the server side: DAG nodes are named, ordered buttons with their neighbours for the arrow keys;
every URL a link points to is a full page when opened directly (``HX-Request`` decides); the graph has a table
of its nodes that stays small for a 2,000-node run; form errors are tied to their fields."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

from aihub.app import create_app
from aihub.db.models import NodeRun, User
from aihub.domain.status import NodeStatus
from aihub.services.runs import create_run
from aihub.services.users import create_user
from aihub.services.workflows import create_workflow
from aihub.settings import Settings
from aihub.web.svg import layout, overview
from bench.web import big_spec
from tests.engine.support import wait_for_run
from tests.web.webapp import PASSWORD, USERS, Client, Web, example

DIAMOND = {"b": ["a"], "a": [], "d": ["b", "c"], "c": ["a"]}


def test_keyboard_order_is_by_layer_then_name_and_arrows_follow_the_edges() -> None:
    graph = layout({"z": [], "y": [], "x": ["z", "y"], "w": ["z"]})
    assert graph.order == ("node-y", "node-z", "node-w", "node-x")
    # drawn left to right in the same order
    assert graph.boxes["y"].x < graph.boxes["z"].x and graph.boxes["w"].x < graph.boxes["x"].x
    assert graph.nav["node-y"] == {"down": "node-x", "right": "node-z"}
    assert graph.nav["node-z"] == {"down": "node-w", "left": "node-y"}
    assert graph.nav["node-x"] == {"up": "node-y", "left": "node-w"}
    assert graph.nav["node-w"] == {"up": "node-z", "right": "node-x"}


def test_a_collapsed_graph_puts_summary_boxes_in_the_keyboard_order() -> None:
    parents: dict[str, list[str]] = {f"n{i:03}": [] for i in range(400)}
    parents["end"] = list(parents)
    graph = overview(parents)
    assert graph.order == ("group-0", "node-end")
    assert graph.nav == {"group-0": {"down": "node-end"}, "node-end": {"up": "group-0"}}


def node_buttons(html: str) -> list[dict[str, str]]:
    """The attributes of every ``<svg role="button">`` of a page, in document order."""
    found: list[dict[str, str]] = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = {k: v or "" for k, v in attrs}
            if tag == "svg" and a.get("role") == "button":
                found.append(a)

    Parser().feed(html)
    return found


async def finished_run(web: Web, client: Client, spec: str, name: str = "a11y") -> int:
    version = await create_workflow(await User.get(username="alice"), spec)
    # alice's workflow: another user confirms having read what it runs (the author check)
    form = {"name": name, "author_ok": str(version.id)}
    response = await client.post(f"/versions/{version.id}/run", form)
    run_id = int(response.headers["location"].rsplit("/", 1)[1])
    await wait_for_run(web.rt, run_id)
    return run_id


async def test_run_page_nodes_are_named_focusable_buttons(web: Web) -> None:
    client = await web.client("alice")
    run_id = await finished_run(web, client, example())
    await NodeRun.filter(run_id=run_id, name="step2").update(status=NodeStatus.FAILED, retry_count=2)
    page = (await client.get(f"/runs/{run_id}")).text
    buttons = node_buttons(page)
    assert [b["id"] for b in buttons] == ["node-step1", "node-step2"]
    assert all(b["tabindex"] == "0" for b in buttons)
    assert buttons[0]["aria-label"] == "step1 — succeeded"
    assert buttons[1]["aria-label"] == "step2 — failed, retried 2 times"
    assert buttons[0]["data-down"] == "node-step2" and buttons[1]["data-up"] == "node-step1"
    # no status by colour alone: each node carries its glyph; the graph is a group, not an image holding buttons
    assert '<tspan class="icon">✕</tspan>' in page and '<tspan class="icon">✓</tspan>' in page
    assert (
        'role="group" aria-label="workflow graph"' in page
        and 'aria-label="workflow graph" role="img"' not in page
    )
    assert 'role="status"' in page  # the live region that says what the panel loaded

    zh = (await client.http.get(f"/runs/{run_id}", headers={"Accept-Language": "zh-CN"})).text
    assert "重试 2 次" in node_buttons(zh)[1]["aria-label"], node_buttons(zh)[1]["aria-label"]


async def test_version_page_nodes_are_named_by_their_name_only(web: Web) -> None:
    client = await web.client("alice")
    version = await create_workflow(await User.get(username="alice"), example())
    buttons = node_buttons((await client.get(f"/versions/{version.id}")).text)
    assert [(b["id"], b["aria-label"]) for b in buttons] == [("node-step1", "step1"), ("node-step2", "step2")]
    missing = await client.get(f"/versions/{version.id}/nodes/nope")
    assert missing.status_code == 404 and "nope" in missing.text


async def test_node_tabs_follow_the_wai_aria_tabs_pattern(web: Web) -> None:
    client = await web.client("alice")
    run_id = await finished_run(web, client, example())
    panel = (await client.get(f"/runs/{run_id}/nodes/step2?tab=logs", htmx=True)).text
    assert 'role="tablist"' in panel and 'role="tabpanel"' in panel
    tabs = re.findall(r'<a role="tab"[^>]*>', panel)
    assert len(tabs) == 5
    selected = [t for t in tabs if 'aria-selected="true"' in t]
    assert len(selected) == 1 and 'id="tab-logs"' in selected[0] and 'tabindex="0"' in selected[0]
    assert all('tabindex="-1"' in t for t in tabs if t not in selected)
    assert 'aria-labelledby="tab-logs"' in panel
    assert 'data-announce="step2 — succeeded: Logs"' in panel


async def test_retry_from_a_node_asks_first(web: Web) -> None:
    client = await web.client("alice")
    run_id = await finished_run(web, client, example())
    panel = (await client.get(f"/runs/{run_id}/nodes/step2", htmx=True)).text
    assert 'id="retry-from-node"' in panel and 'id="confirm-retry"' not in panel
    confirm = (await client.get(f"/runs/{run_id}/nodes/step2?confirm=retry", htmx=True)).text
    assert 'id="confirm-retry"' in confirm and 'name="from_node" value="step2"' in confirm
    assert 'id="retry-from-node"' not in confirm


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a" and a.get("href") and "download" not in a:
            self.hrefs.append(a["href"] or "")


def links(html: str, base: str) -> set[str]:
    parser = Links()
    parser.feed(html)
    return {urljoin(base, h) for h in parser.hrefs}


def assert_full_page(html: str, url: str) -> None:
    assert re.search(r'<html lang="(en|zh-CN)">', html), f"{url}: no <html lang>"
    title = re.search(r"<title>([^<]+)</title>", html)
    assert title and title[1].strip(), f"{url}: no title"
    assert 'id="main"' in html and "/static/app.css" in html, f"{url}: not the whole page"


async def test_every_linked_url_is_a_full_page_when_opened_directly(web: Web) -> None:
    """Hazard: a link whose URL answers an htmx fragment (a node's tab) opened in a new tab showed a bare
    fragment: no title, no language, no styles, no way back."""
    client = await web.client("admin")
    run_id = await finished_run(web, client, example())
    version_id = (await NodeRun.filter(run_id=run_id).first().prefetch_related("run")).run.version_id  # type: ignore[union-attr]
    start = [f"/runs/{run_id}", f"/versions/{version_id}", "/runs", "/workflows", f"/runs/{run_id}/table"]
    start += [f"/runs/{run_id}/nodes/step2?tab={t}" for t in ("io", "details", "logs", "container", "events")]
    start += [f"/versions/{version_id}/nodes/step1", f"/runs/{run_id}/nodes/step2?confirm=retry"]
    seen: set[str] = set()
    for url in start:
        for htmx in (True, False):
            html = (await client.get(url, htmx=htmx)).text
            seen |= links(html, "http://testserver" + url)
    checked = 0
    for url in sorted(seen):
        parts = urlsplit(url)
        if parts.netloc != "testserver" or parts.path.startswith(("/static", "/graphql")):
            continue
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        response = await client.get(path)
        if response.status_code in (302, 303):  # "/" goes on to the runs
            response = await client.get(response.headers["location"])
        assert response.status_code == 200, (path, response.status_code)
        if response.headers["content-type"].startswith("text/html"):
            assert_full_page(response.text, path)
            checked += 1
    assert checked >= 15, checked
    # the same URLs answer htmx with the fragment alone
    for path in (f"/runs/{run_id}/nodes/step2?tab=logs", f"/versions/{version_id}/nodes/step1"):
        fragment = (await client.get(path, htmx=True)).text
        assert "<html" not in fragment and 'id="node-detail"' in fragment
        page = (await client.get(path)).text
        assert 'id="node-detail"' in page and 'class="dag"' in page


async def test_a_directly_opened_node_panel_is_titled_after_the_node(web: Web) -> None:
    client = await web.client("alice")
    run_id = await finished_run(web, client, example())
    page = (await client.get(f"/runs/{run_id}/nodes/step2?tab=logs")).text
    assert re.search(r"<title>step2 · Run a11y · AIHub Workflow</title>", page), page[:600]
    assert 'aria-selected="true"' in page and 'id="log-lines"' in page


async def test_login_errors_are_tied_to_the_fields(web: Web) -> None:
    client = web.anonymous()
    await client.get("/login")
    response = await client.post("/login", {"username": "admin", "password": "wrong", "next": "/"})
    assert response.status_code in (400, 401), response.status_code
    inputs = re.findall(r"<input name=\"(?:username|password)\"[^>]*>", response.text)
    assert len(inputs) == 2
    assert all('aria-invalid="true"' in i and 'aria-describedby="login-error"' in i for i in inputs)
    assert 'id="login-error" role="alert"' in response.text
    fresh = (await client.get("/login")).text
    assert "aria-invalid" not in fresh


@pytest.fixture
async def bare(settings: Settings) -> AsyncIterator[Web]:
    """The app without its engine: a run's nodes stay WAITING until a test changes them."""
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


async def test_the_table_of_nodes_of_a_2000_node_run_is_paged_and_filtered(bare: Web) -> None:
    alice = await User.get(username="alice")
    version = await create_workflow(alice, big_spec(20, 100))
    run = await create_run(bare.rt.bus, alice, version.id, name="big")
    await NodeRun.filter(run_id=run.id, name="n03_007").update(status=NodeStatus.FAILED, retry_count=1)
    client = await bare.client("alice")

    page = (await client.get(f"/runs/{run.id}")).text
    assert "The 2001 nodes as a table" in page and f'hx-get="/runs/{run.id}/table"' in page

    first = await client.get(f"/runs/{run.id}/table", htmx=True)
    rows = re.findall(r'id="row-link-([^"]+)"', first.text)
    assert rows[:3] == ["n00_000", "n00_001", "n00_002"] and len(rows) == 100
    assert len(first.text.encode()) < 60_000
    assert "page 1 of 21" in first.text and "<html" not in first.text
    assert 'hx-get="/runs/' in first.text  # embedded: a name opens the panel in place

    last = (await client.get(f"/runs/{run.id}/table?page=21")).text
    assert_full_page(last, "table")
    assert re.findall(r'id="row-link-([^"]+)"', last) == ["fan_in"]
    assert 'hx-get="/runs/' not in last.split('id="nodes-table"')[1]  # its own page: plain links

    # a summary box's list of nodes: the fragment for htmx, the run (version) page with the list open otherwise
    for base in (f"/runs/{run.id}", f"/versions/{version.id}"):
        fragment = (await client.get(f"{base}/groups/3", htmx=True)).text
        assert "<html" not in fragment and 'id="chip-btn-n03_007"' in fragment
        whole = (await client.get(f"{base}/groups/3")).text
        assert_full_page(whole, f"{base}/groups/3")
        listed = whole.split('id="group-list"')[1]
        assert 'id="chip-btn-n03_007"' in listed and 'id="chip-btn-n03_099"' in listed
    chip = (await client.get(f"/runs/{run.id}/groups/3", htmx=True)).text.split('id="chip-btn-n03_007"')[1]
    assert 'aria-label="n03_007 — failed, retried 1 time"' in chip.split(">")[0]

    failed = (await client.get(f"/runs/{run.id}/table?status=FAILED", htmx=True)).text
    assert re.findall(r'id="row-link-([^"]+)"', failed) == ["n03_007"]
    row = failed.split('id="row-link-n03_007"')[1].split("</tr>")[0]
    assert "FAILED" in row and '<td class="num">1</td>' in row


async def test_create_run_errors_are_tied_to_their_fields(web: Web) -> None:
    alice = await User.get(username="alice")
    spec = "name: needs-label\nparams:\n  - name: label\n  - name: other\n    default: x\nnodes:\n  - name: a\n    image: busybox\n    command: echo $label\n"
    version = await create_workflow(alice, spec)
    client = await web.client("alice")
    missing = await client.post(f"/versions/{version.id}/run", {"name": "no-label"})
    assert missing.status_code == 400
    label = re.search(r'<input name="param.label"[^>]*>', missing.text)
    other = re.search(r'<input name="param.other"[^>]*>', missing.text)
    assert label and 'aria-describedby="params-error"' in label[0] and 'aria-invalid="true"' in label[0], (
        label
    )
    assert other and "aria-invalid" not in other[0]
    long = await client.post(f"/versions/{version.id}/run", {"name": "n" * 201, "param.label": "x"})
    name = re.search(r'<input name="name"[^>]*>', long.text)
    assert long.status_code == 400 and name
    assert 'aria-invalid="true"' in name[0] and 'aria-describedby="name-error"' in name[0]
    assert 'id="name-error"' in long.text


async def test_every_page_has_the_icon_and_favicon_ico_finds_it(web: Web) -> None:
    """A tab and a bookmark show our icon: every page links it (the login page and GraphiQL, before any login,
    too), it is served, and ``/favicon.ico`` — what a browser asks when a page says nothing, and what the
    console showed as a 404 on every page — leads to it."""
    anonymous = web.anonymous()
    admin = await web.client()
    link = '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
    for client, url in (
        (anonymous, "/login"),
        (admin, "/runs"),
        (admin, "/workflows/new"),
        (admin, "/graphql"),
    ):
        response = await client.get(url)
        assert response.status_code == 200, url
        assert link in response.text, url
    icon = await anonymous.get("/static/favicon.svg")
    assert icon.status_code == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.text.startswith("<svg") and "</svg>" in icon.text
    ico = await anonymous.get("/favicon.ico")
    assert ico.status_code == 301 and ico.headers["location"] == "/static/favicon.svg"
