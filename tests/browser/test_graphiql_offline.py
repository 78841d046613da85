"""GraphiQL without internet (issue 14, point 6): /graphql loads React and GraphiQL from the package's static
files; with every request to anything but 127.0.0.1 refused, the page renders, runs a query over HTTP and a
subscription over its websocket (the Headers tab's token as connection parameters), and its CSP holds.

These tests open their own Chromium rather than the ``page`` fixture: that one audits every page with axe-core,
and GraphiQL's editor (a third-party developer tool, not the product's UI) has findings of its own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote, urlparse

import pytest
from playwright.sync_api import Page, Route, expect, sync_playwright
from test_page_flows_browser import admin_token, gql
from webserver import WebServer

from tests.browser.conftest import ARGS, CHROMIUM

LIVE_TIMEOUT = 60_000


@pytest.fixture
def ide_page(server: WebServer) -> Iterator[Page]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context(base_url=server.url, viewport={"width": 1400, "height": 900}).new_page()
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def block_the_internet(page: Page, refused: list[str]) -> None:
    def only_local(route: Route) -> None:
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)


def open_graphiql(page: Page, query: str, token: str) -> None:
    headers = json.dumps({"Authorization": f"Bearer {token}"})
    page.goto(f"/graphql?q={quote(query)}&headers={quote(headers)}")
    expect(page.locator(".graphiql-execute-button")).to_be_visible(timeout=LIVE_TIMEOUT)


def test_graphiql_runs_a_query_and_a_subscription_offline(ide_page: Page, server: WebServer) -> None:
    page = ide_page
    refused: list[str] = []
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    block_the_internet(page, refused)
    token = admin_token(server)
    version = gql(
        server,
        "mutation($s: JSON!) { createWorkflow(spec: $s) { id } }",
        token,
        s={"name": "offline-check", "nodes": [{"name": "only", "command": "echo offline"}]},
    )["createWorkflow"]["id"]
    run = gql(
        server, 'mutation($v: ID!) { createRun(versionId: $v, name: "offline") { id } }', token, v=version
    )["createRun"]["id"]

    open_graphiql(page, "{ me { username } }", token)
    page.locator(".graphiql-execute-button").click()
    expect(page.locator(".graphiql-response")).to_contain_text('"username": "admin"', timeout=LIVE_TIMEOUT)

    subscription = f'subscription {{ runEvents(runId: "{run}") {{ runStatus node nodeStatus snapshot }} }}'
    open_graphiql(page, subscription, token)
    page.locator(".graphiql-execute-button").click()
    expect(page.locator(".graphiql-response")).to_contain_text('"runEvents"', timeout=LIVE_TIMEOUT)
    expect(page.locator(".graphiql-response")).to_contain_text(
        '"runStatus": "SUCCEEDED"', timeout=LIVE_TIMEOUT
    )

    assert refused == [], refused  # nothing was fetched from elsewhere (a CDN)
    assert problems == [], problems  # no script or CSP error


def test_the_graphiql_page_loads_only_local_scripts(ide_page: Page, server: WebServer) -> None:
    page = ide_page
    response = page.request.get(server.url + "/graphql", headers={"Accept": "text/html"})
    html = response.text()
    for src in (
        "/static/graphiql/react-18.2.0.production.min.js",
        "/static/graphiql/react-dom-18.2.0.production.min.js",
        "/static/graphiql/graphiql-3.8.3.min.js",
        "/static/graphiql/plugin-explorer-1.0.2.umd.js",
        "/static/graphiql/graphiql-3.8.3.min.css",
    ):
        assert src in html, src
        assert page.request.get(server.url + src).status == 200, src
    assert "unpkg" not in html and "https://" not in response.headers["content-security-policy"]
