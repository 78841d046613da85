"""Publishing a module across two users in a real Chromium. The administrator sets up a team, its leader, a
member and a category on the admin pages; the member registers a module from a real git repository, watches it
build, asks for it to be published; the leader rejects it with a reason (a reason is required), the member
sees the reason, rebuilds and asks again, the leader approves and the module is published."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from test_quick_start import shot
from webserver import ADMIN_PASSWORD, WebServer, web_server

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 60_000
PASSWORD = "password-1234"
REASON = "Describe the algorithm input in the README"


@pytest.fixture(scope="module")
def server() -> Iterator[WebServer]:
    """A server that may clone ``file://`` repositories (a local installation does not by default)."""
    with web_server(AIHUB_ALLOW_FILE_GIT="true") as srv:
        yield srv


def session(browser: Browser, server: WebServer, username: str, password: str = PASSWORD) -> Page:
    context = browser.new_context(base_url=server.url, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    return page


def set_up_team(admin: Page) -> None:
    admin.get_by_role("link", name="Admin").click()
    admin.locator("#admin-tab-teams").click()
    admin.locator("#new-name").fill("vision")
    admin.locator("#create-team").click()
    expect(admin.locator("#team-vision")).to_be_visible()
    admin.locator("#admin-tab-categories").click()
    admin.locator("#new-name").fill("data-processing")
    admin.locator("#new-description").fill("turning data into data")
    admin.locator("#create-category").click()
    expect(admin.locator("#category-data-processing")).to_be_visible()
    admin.locator("#admin-tab-users").click()
    for username, leader in (("alice", False), ("bob", True)):
        admin.locator("#new-username").fill(username)
        admin.locator("#new-password").fill(PASSWORD)
        admin.locator("#new-team_id").select_option(label="vision")
        if leader:
            admin.locator("#new-is_team_leader").check()
        admin.locator("#create-user").click()
        expect(admin.locator(f"#user-{username}")).to_be_visible()
    shot(admin, "admin-users")


def register_module(alice: Page, repo: Path) -> None:
    alice.get_by_role("link", name="Modules").click()
    alice.locator("#register-module").click()
    alice.locator("#category").select_option("data-processing")
    alice.locator("#name").fill("hash-file")
    alice.locator("#description").fill("Hex digest of a file")
    alice.locator("#git_url").fill(repo.as_uri())
    alice.locator("#add-env").click()
    alice.locator("#env-0-key").fill("PYTHONUNBUFFERED")
    alice.locator("#env-0-value").fill("1")
    for j, (name, description) in enumerate((("input_file", "file to hash"), ("algorithm", "hashlib name"))):
        alice.locator("#add-input").click()
        alice.locator(f"#inputs-{j}-name").fill(name)
        alice.locator(f"#inputs-{j}-description").fill(description)
    alice.locator("#add-output").click()
    alice.locator("#outputs-0-name").fill("digest")
    alice.locator("#outputs-0-path").fill("/tmp/workflow_space/hash-file/digest.txt")
    alice.locator("#outputs-0-type").select_option("text")
    alice.locator("#outputs-0-description").fill("the hex digest")
    expect(alice.locator("#git_url")).to_have_value(repo.as_uri())  # kept across the row buttons
    shot(alice, "module-form")
    alice.locator("#save-module").click()


def expect_status(page: Page, status: str) -> None:
    expect(page.locator("#module-status")).to_have_text(status, timeout=BUILD_TIMEOUT)


def test_publish_reject_with_reason_then_approve(
    browser: Browser, server: WebServer, module_repo: Path
) -> None:
    admin = session(browser, server, "admin", ADMIN_PASSWORD)
    set_up_team(admin)

    alice = session(browser, server, "alice")
    register_module(alice, module_repo)
    expect_status(alice, "BUILT")  # the page follows the build without a reload
    expect(alice.locator("#build-status")).to_have_text("BUILT")
    expect(alice.locator("#build-log")).to_contain_text("entrypoint:")
    expect(alice.locator("#readme h1")).to_have_text("hash-file")
    shot(alice, "module-detail")
    module_url = alice.url
    alice.locator("#request-publish").click()
    expect_status(alice, "PENDING_REVIEW")

    bob = session(browser, server, "bob")
    bob.get_by_role("link", name="Reviews").click()
    row = bob.locator(".review-row", has_text="hash-file")
    expect(row).to_have_attribute("data-status", "PENDING")
    row.get_by_role("button", name="Reject").click()
    expect(row.locator(".field-error")).to_contain_text("needs a reason")
    shot(bob, "reviews")
    row.get_by_role("textbox").fill(REASON)
    row.get_by_role("button", name="Reject").click()
    expect(row).to_have_attribute("data-status", "REJECTED")

    alice.goto(module_url)
    expect_status(alice, "REJECTED")
    expect(alice.locator("#rejection-reason")).to_have_text(REASON)
    alice.locator("#rebuild-module").click()
    expect_status(alice, "BUILT")
    alice.locator("#request-publish").click()
    expect_status(alice, "PENDING_REVIEW")

    bob.reload()
    pending = bob.locator('.review-row[data-status="PENDING"]', has_text="hash-file")
    pending.get_by_role("button", name="Approve").click()
    expect(bob.locator(".review-row", has_text="hash-file").first).to_have_attribute(
        "data-status", "APPROVED"
    )

    alice.goto(module_url)
    expect_status(alice, "PUBLISHED")
    alice.get_by_role("link", name="Modules").click()
    expect(alice.locator("#module-row-hash-file")).to_contain_text("PUBLISHED")
    shot(alice, "modules")
