"""A 2,000-node workflow in a real Chromium: the version and run pages load, a summary box lists its nodes and a
click on one opens its panel (playwright's default waits; no timed assertions)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, expect
from webserver import ADMIN_PASSWORD, WebServer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.web import big_spec


def graphql(server: WebServer, query: str, token: str | None = None, **variables: Any) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(
        server.url + "/graphql", json={"query": query, "variables": variables}, headers=headers, timeout=60
    )
    body = response.json()
    assert not body.get("errors"), body
    return body["data"]  # type: ignore[no-any-return]


def log_in(page: Page) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()


def open_node_through_its_box(page: Page, group: int, node: str) -> None:
    page.locator(f"#group-{group} > rect").first.click()
    # a chip's name is the node's, with its status on the run page ("n12_099 — stopped")
    chip = page.locator("#group-list").get_by_role("button", name=re.compile(f"^{node}( —|$)"))
    expect(chip).to_be_visible()
    chip.click()
    expect(page.locator("#node-panel")).to_contain_text(node)


def test_a_2000_node_graph_loads_and_every_node_opens(page: Page, server: WebServer) -> None:
    login = "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }"
    token = graphql(server, login, u="admin", p=ADMIN_PASSWORD)["login"]["token"]
    create = "mutation($s: JSON!) { createWorkflow(spec: $s) { id } }"
    version_id = graphql(server, create, token, s=big_spec(20, 100))["createWorkflow"]["id"]
    log_in(page)

    page.goto(f"/versions/{version_id}")
    expect(page.locator("#collapsed-note")).to_contain_text("2001 nodes")
    assert page.locator("svg.node").count() < 100  # wide layers are summary boxes, not 2,000 drawings
    open_node_through_its_box(page, 7, "n07_042")
    page.locator("#node-fan_in > rect").click()
    expect(page.locator("#node-panel")).to_contain_text("fan_in")

    run = 'mutation($v: ID!) { createRun(versionId: $v, name: "big") { id } }'
    run_id = graphql(server, run, token, v=version_id)["createRun"]["id"]
    graphql(server, "mutation($r: ID!) { stopRun(id: $r) { id } }", token, r=run_id)
    page.goto(f"/runs/{run_id}")
    expect(page.locator("#run-header")).to_contain_text("big")
    open_node_through_its_box(page, 12, "n12_099")
    expect(page.locator("#node-panel")).to_contain_text("Outputs")
