"""The Chinese UI in a real Chromium (issue 12). With ``Accept-Language: zh-CN`` the seed's quick start —
create a workflow in the editor, run it, open every node tab, register a module, ask for its review — shows no
English UI string: every visible text, label, placeholder and tooltip is compared with the English catalogue's
messages. The header's language switch is remembered after logging out and in again."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from babel.messages.pofile import read_po
from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import Error as PlaywrightError
from test_quick_start import GREEN, LIVE_TIMEOUT, expect_node, shot
from webserver import ADMIN_PASSWORD, WebServer, web_server

from aihub.web.i18n import po_path

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 60_000
WORKFLOW, RUN, CATEGORY = "图像分类-训练", "第一次运行", "数据处理"

# every piece of text a person can see or hear: text nodes, and the attributes that are shown or read out
VISIBLE_TEXT = """() => {
  const out = [];
  const shown = (el) => !!el && !el.closest('[lang="en"]:not(html), .visually-hidden, pre, code, .log, textarea, .readme')
    && (el.closest('svg') || el.getClientRects().length > 0);
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const text = n.textContent.trim();
    if (text && shown(n.parentElement)) out.push(text);
  }
  for (const el of document.querySelectorAll('[placeholder], [aria-label], [title], optgroup[label]')) {
    if (el.closest('[lang="en"]:not(html)')) continue;
    for (const a of ['placeholder', 'aria-label', 'title', 'label']) {
      const v = el.getAttribute(a);
      if (v && (a !== 'label' || el.tagName === 'OPTGROUP')) out.push(v.trim());
    }
  }
  out.push(document.title);
  return out;
}"""


@pytest.fixture(scope="module")
def server() -> Iterator[WebServer]:
    with web_server(AIHUB_ALLOW_FILE_GIT="true") as srv:
        yield srv


@pytest.fixture
def zh_page(browser: Browser, server: WebServer) -> Iterator[Page]:
    context = browser.new_context(
        base_url=server.url, viewport={"width": 1400, "height": 900}, locale="zh-CN"
    )
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def english_messages() -> set[str]:
    """The English UI strings that have a different Chinese translation (``Dockerfile`` stays ``Dockerfile``)."""
    with po_path("zh_CN").open("rb") as fp:
        catalog = read_po(fp, locale="zh_CN")
    english: set[str] = set()
    for message in catalog:
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        for msgid in ids:
            if msgid not in strings and re.search(r"[A-Za-z]{2}", msgid):
                english.add(re.sub(r"<[^>]+>", "", msgid))
    return english


ENGLISH = english_messages()


# three English words in a row: a sentence the catalogues do not know yet (an engine message, a new page)
ENGLISH_PHRASE = re.compile(r"[A-Za-z]{2,}(?:[,;:'()]?\s+[(']?[A-Za-z]{2,}){2,}")


def read_visible_text(page: Page, tries: int = 3) -> list[str]:
    """The page may still be navigating (a redirect after a form): read it once it has a body, and again if a
    navigation replaced the document while it was read."""
    for attempt in range(tries):
        page.wait_for_load_state("domcontentloaded")
        page.wait_for_function("() => document.body !== null")
        try:
            return page.evaluate(VISIBLE_TEXT)  # type: ignore[no-any-return]
        except PlaywrightError:
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def assert_no_english(page: Page, where: str) -> None:
    texts = read_visible_text(page)
    found = sorted(
        {t for t in texts if t in ENGLISH or t.rstrip(":：.") in ENGLISH or ENGLISH_PHRASE.search(t)}
    )
    assert found == [], f"English UI strings on {where}: {found}"
    assert page.locator("html").get_attribute("lang") == "zh-CN"


def log_in(page: Page, username: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    page.goto("/login")
    expect(page.get_by_role("heading", name="登录")).to_be_visible()
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(password)
    page.get_by_role("button", name="登录").click()
    expect(page.locator("main h1")).to_be_visible()


def chinese_spec() -> str:
    data = yaml.safe_load((REPO / "examples" / "pass-params-demo.yaml").read_text())
    data["name"], data["description"] = WORKFLOW, "图像分类模型的训练流程"
    data["params"][0]["description"] = "要说的话"  # what a Chinese user writes
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def test_the_quick_start_in_chinese_shows_no_english(
    zh_page: Page, server: WebServer, module_repo: Path
) -> None:
    page = zh_page
    page.goto("/login")
    assert_no_english(page, "the log-in page")
    shot(page, "zh-login")
    log_in(page)
    assert_no_english(page, "the runs page")

    page.get_by_role("link", name="工作流").click()
    page.get_by_role("link", name="创建工作流").click()
    expect(page.get_by_role("heading", name="创建工作流")).to_be_visible()
    page.locator("#add-node").click()
    expect(page.locator("#nodes-0")).to_be_visible()
    assert_no_english(page, "the editor")
    shot(page, "zh-editor")
    page.locator("#tab-yaml").click()
    page.locator("#spec").fill(chinese_spec())
    page.locator("#save-workflow").click()
    expect(page.locator("#run-version")).to_be_visible()
    expect(page.locator("main h1")).to_contain_text(WORKFLOW)
    assert_no_english(page, "the version page")

    page.locator("#run-version").click()
    assert_no_english(page, "the run form")
    page.locator("#run-name").fill(RUN)
    page.locator("#create-run").click()
    expect(page.locator("#run-header")).to_contain_text(RUN)
    expect_node(page, "step2", "SUCCEEDED", GREEN)
    expect(page.locator("#run-status")).to_have_text("成功", timeout=LIVE_TIMEOUT)
    page.locator("#node-step2 rect").click()
    expect(page.locator("#node-detail")).to_have_attribute("data-node", "step2")
    for tab, title in (
        ("io", "输入输出"),
        ("details", "详情"),
        ("container", "容器"),
        ("events", "k8s事件"),
        ("logs", "日志"),
    ):
        page.locator(f"#tab-{tab}").click()
        expect(page.locator(f"#tab-{tab}")).to_have_text(title)
        expect(page.locator(f"#tab-{tab}")).to_have_class("active")
        assert_no_english(page, f"the {tab} tab")
    expect(page.locator("#log-lines .l").first).to_be_visible()
    shot(page, "zh-run-detail-logs")

    page.get_by_role("link", name="运行实例").click()
    expect(page.locator(".run-row").first).to_contain_text(RUN)
    assert_no_english(page, "the runs list")
    page.get_by_role("link", name="工作流").click()
    page.locator("#q").fill("图像")
    expect(page.locator(".workflow-row")).to_have_count(1)
    expect(page.locator(".workflow-row")).to_contain_text(WORKFLOW)
    shot(page, "zh-workflows")

    # a category named in Chinese, then a module in it: registered, built, publishing requested, reviewed
    page.goto("/admin/categories")
    page.locator("#new-name").fill(CATEGORY)
    page.locator("#create-category").click()
    expect(page.locator(f'#categories input[name="name"][value="{CATEGORY}"]')).to_have_count(1)
    assert_no_english(page, "the categories page")
    page.get_by_role("link", name="模块管理").click()
    page.get_by_role("link", name="创建模块").click()
    assert_no_english(page, "the module form")
    page.locator("#category").select_option(CATEGORY)
    page.locator("#name").fill("hash-file")
    page.locator("#description").fill("计算文件的哈希值")
    page.locator("#git_url").fill(module_repo.as_uri())
    page.locator("#ref").fill("main")
    page.locator("#add-input").click()
    page.locator("#inputs-0-name").fill("input_file")
    page.locator("#add-output").click()
    page.locator("#outputs-0-name").fill("digest")
    page.locator("#outputs-0-path").fill("/tmp/workflow_space/hash-file/digest.txt")
    shot(page, "zh-module-form")
    page.locator("#save-module").click()
    expect(page.locator("#module-status")).to_have_text("构建成功", timeout=BUILD_TIMEOUT)
    assert_no_english(page, "the module page")
    page.locator("#request-publish").click()
    expect(page.locator("#module-status")).to_have_text("待审核")
    page.get_by_role("link", name="模块审核").first.click()
    expect(page.locator(".review-row")).to_have_count(1)
    assert_no_english(page, "the reviews page")
    shot(page, "zh-reviews")
    page.locator(".review-row a").first.click()
    expect(page.locator("main > h1")).to_contain_text("hash-file")
    assert_no_english(page, "a review's page")


def test_the_language_switch_is_remembered_after_logout_and_login(zh_page: Page, server: WebServer) -> None:
    page = zh_page
    log_in(page)
    expect(page.get_by_role("heading", name="运行实例")).to_be_visible()
    page.locator("#lang-en").click()
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    assert page.locator("html").get_attribute("lang") == "en"
    with pytest.raises(AssertionError, match="English UI strings"):  # the check sees English when it is there
        assert_no_english(page, "an English page")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()  # the browser still asks for zh-CN
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    page.locator("#lang-zh_CN").click()
    expect(page.get_by_role("heading", name="运行实例")).to_be_visible()
    page.get_by_role("button", name="退出登录").click()
    log_in(page)
    expect(page.get_by_role("heading", name="运行实例")).to_be_visible()
    assert page.locator("html").get_attribute("lang") == "zh-CN"
