"""Module states that do not lie, in a real Chromium with three users (issue 14, point 3): alice publishes v1;
she edits the description and the git ref; carol (an outsider) still sees v1 — on the modules page, the module
page and through GraphQL — until bob (alice's team leader) approves; a rejection's reason reaches alice, who asks
again without a rebuild; after the approval everybody sees v2."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from test_module_review import PASSWORD, expect_status, register_module, session, set_up_team
from webserver import ADMIN_PASSWORD, WebServer, web_server

V1 = "Hex digest of a file"
V2 = "Hex digest of a file, now any hashlib algorithm"
MODULE = """query($id: ID!) { module(id: $id) { status description ref publishedBuild { number } } }"""


GIT = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com"]


@pytest.fixture(scope="module")
def server() -> Iterator[WebServer]:
    with web_server(AIHUB_ALLOW_FILE_GIT="true") as srv:
        yield srv


def gql(srv: WebServer, username: str, password: str, query: str, **variables: Any) -> dict[str, Any]:
    login = httpx.post(
        srv.url + "/graphql",
        json={
            "query": "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }",
            "variables": {"u": username, "p": password},
        },
        timeout=30,
    ).json()
    token = login["data"]["login"]["token"]
    body = httpx.post(
        srv.url + "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).json()
    assert not body.get("errors"), body
    return body["data"]  # type: ignore[no-any-return]


def add_outsider(admin: Page) -> None:
    admin.locator("#admin-tab-users").click()
    admin.locator("#new-username").fill("carol")
    admin.locator("#new-password").fill(PASSWORD)
    admin.locator("#create-user").click()
    expect(admin.locator("#user-carol")).to_be_visible()


def decide(bob: Page, approve: bool, reason: str = "") -> None:
    bob.goto("/reviews")
    row = bob.locator('.review-row[data-status="PENDING"]', has_text="hash-file")
    if approve:
        row.get_by_role("button", name="Approve").click()
    else:
        row.get_by_role("textbox").fill(reason)
        row.get_by_role("button", name="Reject").click()
    expect(bob.locator(".review-row", has_text="hash-file").first).to_have_attribute(
        "data-status", "APPROVED" if approve else "REJECTED"
    )


def test_an_edit_reaches_others_only_once_approved(
    browser: Browser, server: WebServer, module_repo: Path
) -> None:
    admin = session(browser, server, "admin", ADMIN_PASSWORD)
    set_up_team(admin)
    add_outsider(admin)
    alice = session(browser, server, "alice")
    register_module(alice, module_repo)
    expect_status(alice, "BUILT")
    module_url = alice.url
    module_id = module_url.rstrip("/").rsplit("/", 1)[1]
    alice.locator("#request-publish").click()
    expect_status(alice, "PENDING_REVIEW")
    bob = session(browser, server, "bob")
    decide(bob, approve=True)

    # alice edits the description and the git ref (a new branch)
    subprocess.run([*GIT, "checkout", "-q", "-b", "v2"], cwd=module_repo, check=True)
    (module_repo / "README.md").write_text((module_repo / "README.md").read_text() + "\nVersion 2.\n")
    subprocess.run([*GIT, "commit", "-q", "-am", "v2"], cwd=module_repo, check=True)
    alice.goto(module_url)
    alice.locator("#edit-module").click()
    alice.locator("#description").fill(V2)
    alice.locator("#ref").fill("v2")
    alice.locator("#save-module").click()
    expect_status(alice, "BUILT")
    expect(alice.locator("#published-note")).to_contain_text(V1)  # the owner sees both
    alice.goto("/modules")
    expect(alice.locator("#module-row-hash-file")).to_contain_text("build 1 published")

    carol = session(browser, server, "carol")
    carol.goto("/modules")
    row = carol.locator("#module-row-hash-file")
    expect(row).to_contain_text(V1)
    expect(row).not_to_contain_text(V2)
    carol.goto(module_url)
    expect_status(carol, "PUBLISHED")
    expect(carol.locator("#module-header")).to_contain_text(V1)
    seen = gql(server, "carol", PASSWORD, MODULE, id=module_id)["module"]
    assert seen == {"status": "PUBLISHED", "description": V1, "ref": "main", "publishedBuild": {"number": 1}}

    # publishing v2: rejected with a reason, asked again without a rebuild, approved
    alice.goto(module_url)
    alice.locator("#request-publish").click()
    expect_status(alice, "PENDING_REVIEW")
    bob.goto("/modules")
    expect(bob.locator("#module-row-hash-file")).to_contain_text("PENDING_REVIEW")
    expect(bob.locator("#module-row-hash-file")).to_contain_text(V2)  # the build under review
    decide(bob, approve=False, reason="Say which algorithms are allowed")
    alice.goto(module_url)
    expect_status(alice, "REJECTED")
    expect(alice.locator("#rejection-reason")).to_have_text("Say which algorithms are allowed")
    builds = alice.locator("#builds .build-row").count()
    alice.locator("#request-publish").click()  # no rebuild
    expect_status(alice, "PENDING_REVIEW")
    expect(alice.locator("#builds .build-row")).to_have_count(builds)
    carol.reload()
    expect(carol.locator("#module-header")).to_contain_text(V1)
    decide(bob, approve=True)

    for page in (carol, alice, bob):
        page.goto("/modules")
        expect(page.locator("#module-row-hash-file")).to_contain_text(V2)
    seen = gql(server, "carol", PASSWORD, MODULE, id=module_id)["module"]
    assert seen == {"status": "PUBLISHED", "description": V2, "ref": "v2", "publishedBuild": {"number": 2}}

    # the review page: admin, leader and owner see alice's three records; the outsider none of them
    for page in (admin, bob, alice):
        page.goto("/reviews")
        expect(page.locator(".review-row", has_text="hash-file")).to_have_count(3)
    carol.goto("/reviews")
    expect(carol.locator(".review-row")).to_have_count(0)
