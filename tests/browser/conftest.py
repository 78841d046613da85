"""Browser fixtures: one ``aihub serve`` per module and Debian's Chromium driven by Python playwright.

Every browser context a test opens (``browser.new_context``) carries axe-core (``a11y.py``): each page state
is checked against WCAG 2.1 A/AA as it is visited, open pages once more at the end, and the test fails on any
violation."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "web"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import a11y
from webserver import WebServer, web_server

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def server() -> Iterator[WebServer]:
    with web_server() as srv:
        yield srv


@pytest.fixture
def axe_findings() -> a11y.Findings:
    return a11y.Findings()


@pytest.fixture
def browser(axe_findings: a11y.Findings) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure-test-deps.sh (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        new_context = browser.new_context

        def audited_context(**kwargs: object) -> BrowserContext:
            return a11y.install(new_context(**kwargs), axe_findings)  # type: ignore[arg-type]

        browser.new_context = audited_context  # type: ignore[method-assign]
        yield browser
        for context in browser.contexts:
            a11y.audit_open_pages(context)
        browser.close()
    a11y.check(axe_findings)


@pytest.fixture
def page(browser: Browser, server: WebServer) -> Iterator[Page]:
    context = browser.new_context(base_url=server.url, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    a11y.audit_open_pages(context)
    context.close()


@pytest.fixture
def module_repo() -> Iterator[Path]:
    """The hash-file example module in a real git repository, outside /tmp (nodes see their own)."""
    root = Path(tempfile.mkdtemp(prefix="aihub-module-repo-", dir="/var/tmp"))
    repo = root / "hash-file"
    shutil.copytree(Path(__file__).resolve().parents[2] / "examples" / "modules" / "hash-file", repo)
    git = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "hash-file module"]):
        subprocess.run([*git, *args], cwd=repo, check=True, capture_output=True)
    yield repo
    shutil.rmtree(root, ignore_errors=True)
