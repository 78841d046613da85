"""The seed's page flows in a real Chromium (issue 14), each also checked through GraphQL: runs page →
create run → workflow → version 2 of 3 → an edited param; version 1 of three run, copied as a new workflow and
exported; a run's copy filled with its params; the run page's legend and stop confirmation."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect
from test_quick_start import log_in
from webserver import ADMIN_PASSWORD, WebServer

SPEC = {
    "name": "three-versions",
    "params": [
        {"name": "size", "description": "how many rows", "default": "v1"},
        {"name": "label", "description": "what to call it", "default": "plain"},
    ],
    "nodes": [
        {
            "name": "only",
            "command": "echo $size $label",
            "inputs": [{"name": "size", "from": "params.size"}, {"name": "label", "from": "params.label"}],
        }
    ],
}


def gql(server: WebServer, query: str, token: str | None = None, **variables: Any) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(
        server.url + "/graphql", json={"query": query, "variables": variables}, headers=headers, timeout=30
    )
    body = response.json()
    assert not body.get("errors"), body
    return body["data"]  # type: ignore[no-any-return]


def admin_token(server: WebServer) -> str:
    data = gql(
        server,
        'mutation($p: String!) { login(username: "admin", password: $p) { token } }',
        p=ADMIN_PASSWORD,
    )
    return str(data["login"]["token"])


@pytest.fixture(scope="module")
def three(server: WebServer) -> dict[str, Any]:
    """A workflow with three versions (their ``size`` defaults v1, v2, v3), made through GraphQL."""
    token = admin_token(server)
    ids = []
    first = gql(
        server,
        "mutation($s: JSON!) { createWorkflow(spec: $s) { id workflow { id } } }",
        token,
        s=SPEC,
    )["createWorkflow"]
    ids.append(first["id"])
    for n in (2, 3):
        spec = {**SPEC, "params": [{**SPEC["params"][0], "default": f"v{n}"}, SPEC["params"][1]]}
        made = gql(
            server,
            "mutation($w: ID!, $s: JSON!) { createWorkflowVersion(workflowId: $w, spec: $s) { id } }",
            token,
            w=first["workflow"]["id"],
            s=spec,
        )
        ids.append(made["createWorkflowVersion"]["id"])
    return {"token": token, "workflow": first["workflow"]["id"], "versions": ids}


def run_by_name(server: WebServer, token: str, name: str) -> dict[str, Any]:
    data = gql(server, "{ runs(first: 100) { items { id name params version { id number } } } }", token)
    found = [r for r in data["runs"]["items"] if r["name"] == name]
    assert len(found) == 1, data
    return found[0]


def test_create_run_from_the_runs_page_with_version_2_of_3(
    page: Page, server: WebServer, three: dict[str, Any]
) -> None:
    log_in(page)
    page.locator("#create-run-button").click()
    expect(page.get_by_role("heading", name="Create run")).to_be_visible()
    page.locator("#pick-workflow").select_option(label="three-versions")
    versions = page.locator("#pick-version option")
    expect(versions).to_have_count(3)
    texts = versions.all_inner_texts()
    assert [t.split(" ")[0] for t in texts] == ["v3", "v2", "v1"] and all("admin" in t for t in texts)
    expect(page.locator("#param-size")).to_have_value("v3")  # the newest version's defaults
    expect(page.locator("#run-form")).to_contain_text("how many rows")
    page.locator("#pick-version").select_option(three["versions"][1])
    expect(page.locator("#param-size")).to_have_value("v2")
    page.locator("#run-name").fill("picked-v2")
    page.locator("#param-label").fill("edited")
    page.locator("#create-run").click()
    expect(page.locator("#run-header")).to_contain_text("picked-v2")
    run = run_by_name(server, three["token"], "picked-v2")
    assert run["version"]["number"] == 2 and run["params"] == {"size": "v2", "label": "edited"}
    assert page.url.endswith(f"/runs/{run['id']}")


def test_version_1_of_three_is_run_copied_as_a_new_workflow_and_exported(
    page: Page, server: WebServer, three: dict[str, Any]
) -> None:
    v1 = three["versions"][0]
    log_in(page)
    page.get_by_role("link", name="Workflows").click()
    row = page.locator(f"#workflow-{three['workflow']}")
    row.locator("summary").click()  # the row expands to all its versions
    expect(row.locator(".version-row")).to_have_count(3)
    expect(row.locator(".version-row").first).to_contain_text("v3")

    with page.expect_download() as download:
        row.locator(f"#export-{v1}").click()
    exported = Path(download.value.path()).read_text()
    assert "default: v1" in exported and "three-versions" in exported

    row.locator(f"#run-{v1}").click()  # the create-run page, version 1 preselected
    expect(page.locator("#pick-version")).to_have_value(v1)
    expect(page.locator("#param-size")).to_have_value("v1")
    page.locator("#run-name").fill("old-version")
    page.locator("#create-run").click()
    expect(page.locator("#run-header")).to_contain_text("old-version")
    assert run_by_name(server, three["token"], "old-version")["version"]["number"] == 1

    page.locator("#copy-run").click()  # a run's copy: its params, editable
    expect(page.locator("#copy-source")).to_be_visible()
    expect(page.locator("#param-size")).to_have_value("v1")
    page.locator("#param-label").fill("copied")
    page.locator("#create-run").click()
    expect(page.locator("#run-header")).to_contain_text("old-version-copy")
    copied = run_by_name(server, three["token"], "old-version-copy")
    assert copied["version"]["number"] == 1 and copied["params"] == {"size": "v1", "label": "copied"}

    page.get_by_role("link", name="Workflows").click()
    page.locator(f"#workflow-{three['workflow']} summary").click()
    page.locator(f"#copy-workflow-{v1}").click()
    expect(page.locator("#target-workflow")).to_be_checked()
    page.locator("#save-workflow").click()
    expect(page.locator("#run-version")).to_be_visible()
    data = gql(
        server, "{ workflows(first: 100) { items { name versions { number spec } } } }", three["token"]
    )
    made = [w for w in data["workflows"]["items"] if w["name"] == "three-versions-copy"]
    assert len(made) == 1 and made[0]["versions"][0]["spec"]["params"][0]["default"] == "v1"


def test_a_finished_runs_page_shows_every_attempt_the_legend_and_asks_before_stopping(
    page: Page, server: WebServer, three: dict[str, Any]
) -> None:
    shared = Path(tempfile.mkdtemp(prefix="aihub-flows-", dir="/var/tmp"))  # nodes get a private /tmp
    shared.chmod(0o777)
    mark = shared / "second-try-mark"
    spec = {
        "name": "second-try",
        "nodes": [
            {"name": "flaky", "retries": 1, "command": f"test -e {mark} || {{ touch {mark}; exit 3; }}"},
            {"name": "after", "depends_on": ["flaky"], "command": "echo done"},
        ],
    }
    made = gql(server, "mutation($s: JSON!) { createWorkflow(spec: $s) { id } }", three["token"], s=spec)
    log_in(page)
    page.goto(f"/versions/{made['createWorkflow']['id']}/run")
    page.locator("#run-name").fill("two-attempts")
    page.locator("#create-run").click()
    expect(page.locator("#run-status")).to_have_text("SUCCEEDED", timeout=90_000)
    shutil.rmtree(shared, ignore_errors=True)
    legend = page.locator("#status-legend .badge")
    assert legend.evaluate_all("els => els.map(e => e.dataset.status)") == [
        "WAITING",
        "RUNNING",
        "SUCCEEDED",
        "FAILED",
        "STOPPED",
        "SKIPPED",
    ]
    expect(page.locator("#bar-flaky-1")).to_have_attribute("data-status", "FAILED")
    expect(page.locator("#bar-flaky-2")).to_have_attribute("data-status", "SUCCEEDED")
    expect(page.locator("#bar-after-1")).to_have_attribute("data-status", "SUCCEEDED")
    expect(page.locator("#no-attempts")).to_have_count(0)
    page.reload()  # opened after the end: the same attempts
    expect(page.locator("#timeline .bar")).to_have_count(3)
    run_id = page.url.rsplit("/", 1)[1]
    data = gql(
        server,
        "query($id: ID!) { run(id: $id) { nodes { name attempts { number status } } } }",
        three["token"],
        id=run_id,
    )
    attempts = {n["name"]: [(a["number"], a["status"]) for a in n["attempts"]] for n in data["run"]["nodes"]}
    assert attempts == {"flaky": [(1, "FAILED"), (2, "SUCCEEDED")], "after": [(1, "SUCCEEDED")]}

    slow = gql(
        server,
        "mutation($s: JSON!) { createWorkflow(spec: $s) { id } }",
        three["token"],
        s={"name": "slow-one", "nodes": [{"name": "wait", "command": "sleep 60"}]},
    )
    page.goto(f"/versions/{slow['createWorkflow']['id']}/run")
    page.locator("#create-run").click()
    expect(page.locator("#run-status")).to_have_text("RUNNING", timeout=60_000)
    page.locator("#stop-run").click()
    expect(page.locator("#stop-confirm")).to_be_visible()
    page.locator("#cancel-stop").click()  # changed one's mind: still running
    expect(page.locator("#run-status")).to_have_text("RUNNING")
    page.locator("#stop-run").click()
    page.locator("#confirm-stop").click()
    expect(page.locator("#run-status")).to_have_text("STOPPED", timeout=60_000)


@contextmanager
def admin_page(
    browser: Browser, server: WebServer, locale: str, width: int, console_errors: list[str] | None = None
) -> Iterator[Page]:
    """A page logged in as admin, in a context of its own: ``locale``, ``width`` px wide; the console's errors
    from the first page on (the login page's included) go to ``console_errors``."""
    context = browser.new_context(
        base_url=server.url, locale=locale, viewport={"width": width, "height": 800}
    )
    try:
        page = context.new_page()
        if console_errors is not None:
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        log_in_as_admin(page)
        yield page
    finally:
        context.close()


def log_in_as_admin(page: Page) -> None:
    """Logged in, whatever the page's language (by the fields' names, not their labels)."""
    page.goto("/login")
    page.locator("input[name=username]").fill("admin")
    page.locator("input[name=password]").fill(ADMIN_PASSWORD)
    page.locator("input[name=password]").press("Enter")
    expect(page.locator("#create-run-button")).to_be_visible()  # (the runs list)


def text_lines(locator: Locator) -> int:
    """How many lines the element's text lays out on."""
    return int(
        locator.evaluate(
            "e => { const r = document.createRange(); r.selectNodeContents(e); "
            "return new Set([...r.getClientRects()].map(x => Math.round(x.top))).size }"
        )
    )


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_the_runs_lists_filters_stand_in_one_row_beside_its_heading(
    browser: Browser, server: WebServer, language: str
) -> None:
    """The runs list's heading, filters and "Create run" are one row on a wide screen, each date filter's label
    just before its field, also where the row wraps on a narrow screen; and the console shows no error on the
    way. (The filter form is an inline form in the toolbar: its flex layout lost to
    ``form.inline``'s ``display: inline``, and the labels and date fields each took a line of their own.)"""
    errors: list[str] = []  # (the console showed a 404 on every page: the /favicon.ico it asked for unbidden)
    with admin_page(browser, server, language, 1280, console_errors=errors) as page:
        page.goto("/runs")
        heading = page.locator("main h1").bounding_box()
        assert heading is not None
        middle = heading["y"] + heading["height"] / 2
        row = [
            "#runs-filter select[name=status]",
            "#runs-workflow",
            "#runs-owner",
            "label[for=runs-from]",
            "#runs-from",
            "label[for=runs-to]",
            "#runs-to",
            "#create-run-button",
        ]
        boxes = [page.locator(selector).bounding_box() for selector in row]
        left = heading["x"] + heading["width"]
        for selector, box in zip(row, boxes, strict=True):
            assert box is not None, selector
            assert box["y"] <= middle <= box["y"] + box["height"], (
                f"{selector} is not beside the heading: {box}"
            )
            assert box["x"] >= left, f"{selector} is not after what comes before it: {box}"
            left = box["x"] + box["width"]
        expect(page.locator("link[rel=icon]")).to_have_attribute("href", "/static/favicon.svg")
        assert errors == []

        page.set_viewport_size({"width": 360, "height": 800})  # the row wraps; a label keeps to its field
        assert labels_beside_their_fields(page) == 2


def labels_beside_their_fields(page: Page) -> int:
    """Checks that each label of the page's filter rows stands just before its field, on its line; returns
    how many there are."""
    labels = page.locator(".filters label[for]:not(.visually-hidden)")
    for label in labels.all():
        field = page.locator(f"#{label.get_attribute('for')}")
        at, box = label.bounding_box(), field.bounding_box()
        assert at is not None and box is not None
        assert box["y"] <= at["y"] + at["height"] / 2 <= box["y"] + box["height"], (label, at, box)
        assert at["x"] + at["width"] <= box["x"], (label, at, box)
    return labels.count()


def test_on_a_phone_the_admins_filters_keep_each_label_with_its_field(
    browser: Browser, server: WebServer
) -> None:
    with admin_page(browser, server, "zh-CN", 360) as page:
        for url, count in (("/admin/users", 2), ("/admin/teams", 1)):
            page.goto(url)
            assert labels_beside_their_fields(page) == count, url


def test_a_button_in_a_narrow_table_column_keeps_its_word_on_one_line(
    browser: Browser, server: WebServer
) -> None:
    """The clusters table's last column is narrow: its "Add" button (添加) broke into 添 and 加, one above the
    other. Counted as the lines its text lays out on."""
    with admin_page(browser, server, "zh-CN", 1280) as page:
        page.goto("/admin/clusters")
        add = page.locator("#create-cluster")
        expect(add).to_have_text("添加")
        assert text_lines(add) == 1


def test_on_a_phone_the_runs_table_scrolls_instead_of_breaking_its_words(
    browser: Browser, server: WebServer, three: dict[str, Any]
) -> None:
    """At 360 px the runs table used to fit by breaking every cell: ``three-versions`` a few letters a line,
    成功 one character above the other. Now it scrolls sideways in a region of its own (named, focusable, as the
    table of nodes), its words whole, and the page itself is no wider than the screen; the workflows too."""
    gql(
        server,
        'mutation($v: ID!) { createRun(versionId: $v, name: "手机上的运行") { id } }',
        three["token"],
        v=three["versions"][0],
    )
    with admin_page(browser, server, "zh-CN", 360) as page:
        row = page.locator(".run-row", has_text="手机上的运行")
        expect(row).to_be_visible()

        assert text_lines(row.locator("td").nth(3)) == 1  # the workflow's name
        assert text_lines(row.locator(".badge")) == 1
        region = page.get_by_role("region", name="运行实例")
        assert region.evaluate("e => e.scrollWidth > e.clientWidth")  # it scrolls, within itself
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 360

        page.goto("/workflows")  # the same for the workflows, a description wrapping as prose
        name = page.locator(f"#workflow-{three['workflow']} .workflow-link")  # (another test made its copy)
        expect(name).to_be_visible()
        assert text_lines(name) == 1
        assert page.get_by_role("region", name="工作流").evaluate("e => e.scrollWidth > e.clientWidth")
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 360


def test_a_tables_scroll_region_is_a_tab_stop_only_while_it_scrolls(
    browser: Browser, server: WebServer
) -> None:
    """On a wide screen the runs table fits: its region is no Tab stop (one less on the keyboard's way to the
    runs); narrowed until it scrolls, it becomes one, so that the arrow keys can scroll it (axe's
    scrollable-region-focusable); widened again, it is none again."""
    with admin_page(browser, server, "zh-CN", 1280) as page:
        region = page.get_by_role("region", name="运行实例")
        expect(region).not_to_have_attribute("tabindex", "0")
        page.set_viewport_size({"width": 360, "height": 800})
        expect(region).to_have_attribute("tabindex", "0")
        region.focus()
        expect(region).to_be_focused()
        for _ in range(5):
            page.keyboard.press("ArrowRight")  # (scrolls the focused region sideways, not the page)
        assert region.evaluate("e => e.scrollLeft") > 0
        assert page.evaluate("() => window.scrollX") == 0
        page.set_viewport_size({"width": 1280, "height": 800})
        expect(region).not_to_have_attribute("tabindex", "0")


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_between_phone_and_desktop_the_header_wraps_instead_of_running_off(
    browser: Browser, server: WebServer, language: str
) -> None:
    """From 641 px (where the menu no longer folds) to 900 px the header held one line: in English at 660 px
    its language switch ran past the right edge, "Log out" and 中文 broke a word a line, and the runs page's
    heading floated beside three lines of filters. Now the header wraps onto a second line and a toolbar's
    filters wrap under its heading."""
    with admin_page(browser, server, language, 660) as page:
        for width in (660, 800):
            page.set_viewport_size({"width": width, "height": 800})
            for url in ("/runs", "/workflows", "/modules", "/runs/new"):
                page.goto(url)
                expect(page.locator("main")).to_be_visible()
                assert page.evaluate("() => document.documentElement.scrollWidth") <= width, (width, url)
                for item in page.locator("header.top a, header.top button").all():
                    if item.is_visible():
                        assert text_lines(item) == 1, (width, url, item.inner_text())


def test_a_chinese_column_heading_stays_whole(
    browser: Browser, server: WebServer, three: dict[str, Any]
) -> None:
    """A workflow's version list has a narrow, often empty description column: its heading 描述 stood as 描
    over 述. Chinese headings (two to four characters) keep to one line on a screen wider than a phone."""
    with admin_page(browser, server, "zh-CN", 1280) as page:
        page.goto("/workflows")
        page.locator(f"#versions-{three['workflow']} summary").click()
        headings = page.locator(f"#versions-{three['workflow']} th")
        expect(headings.first).to_be_visible()
        assert [text_lines(h) for h in headings.all()] == [1] * headings.count(), headings.all_inner_texts()
