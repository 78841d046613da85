"""The UI in Chinese and English (issue 12): the catalogues are complete, the language follows the browser, the
header's switch is remembered per user (and in a cookie before log-in), and names people give things may be
Chinese — created in the UI and through GraphQL, listed, searched, exported as YAML and imported back."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
import yaml
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from aihub.db.models import Category, Run, User, Workflow, WorkflowVersion
from aihub.domain.spec import parse_spec
from aihub.web import i18n
from tests.engine.support import wait_for_run
from tests.web.webapp import Client, Web, example

REPO = Path(__file__).resolve().parents[2]
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]|\{\w+\}|</?\w+[^>]*>")
WORKFLOW, RUN, CATEGORY = "图像分类-训练", "第一次运行", "数据处理"


# ------------------------------------------------------------------------------------------------ catalogues


def extracted_messages() -> set[str | tuple[str, str]]:
    """Every message of the templates and the Python code, as ``make i18n-extract`` finds them."""
    with (REPO / "babel.cfg").open() as fp:
        method_map, options_map = parse_mapping_cfg(fp)
    keywords = {
        "_": None,
        "gettext": None,
        "ngettext": (1, 2),
        "pgettext": ((1, "c"), 2),
        "msg": None,
        "N_": None,
        "NC_": ((1, "c"), 2),
    }
    found: set[str | tuple[str, str]] = set()
    for _, _, message, _, context in extract_from_dir(str(REPO), method_map, options_map, keywords=keywords):
        msgid = message[0] if isinstance(message, tuple | list) else message
        found.add((context, msgid) if context else msgid)
    return found


def catalogue_problems(messages: set[str | tuple[str, str]], catalog: Catalog) -> list[str]:
    """What a catalogue lacks: a message without a translation, or a translation that lost a placeholder
    (``%(name)s``, ``{name}``) or an HTML tag of its message."""
    problems = []
    for message in sorted(messages, key=str):
        context, msgid = message if isinstance(message, tuple) else (None, message)
        entry = catalog.get(msgid, context=context)
        if entry is None:
            problems.append(f"missing: {msgid!r}")
            continue
        ids = entry.id if isinstance(entry.id, tuple) else (entry.id,)
        strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        if not all(strings):
            problems.append(f"not translated: {msgid!r}")
            continue
        wanted = sorted(PLACEHOLDER.findall(ids[-1]))
        for text in strings:
            if sorted(PLACEHOLDER.findall(text)) != wanted:
                problems.append(f"placeholders differ: {msgid!r} -> {text!r}")
    return problems


def zh_catalogue() -> Catalog:
    with i18n.po_path("zh_CN").open("rb") as fp:
        return read_po(fp, locale="zh_CN")


def test_every_message_has_a_chinese_translation_with_its_placeholders() -> None:
    messages = extracted_messages()
    assert len(messages) > 300  # the extraction found the templates and the Python code
    assert {"Workflows", "SUCCEEDED", "Inputs/outputs", ("output type", "text"), "is required"} <= messages
    assert catalogue_problems(messages, zh_catalogue()) == []


def test_the_completeness_check_fails_on_a_gap() -> None:
    """Guards the test above: a missing message, an empty translation and a lost placeholder are each found."""
    catalog = zh_catalogue()
    catalog.delete("Workflows")
    catalog["Runs"].string = ""
    catalog["Run %(name)s"].string = "运行"
    problems = catalogue_problems({"Workflows", "Runs", "Run %(name)s", "Modules"}, catalog)
    assert sorted(problems) == [
        "missing: 'Workflows'",
        "not translated: 'Runs'",
        "placeholders differ: 'Run %(name)s' -> '运行'",
    ]


def test_the_seed_terms_are_used() -> None:
    catalog = zh_catalogue()
    terms = {
        "WAITING": "等待中",
        "RUNNING": "运行中",
        "SUCCEEDED": "成功",
        "FAILED": "失败",
        "STOPPED": "已停止",
        "SKIPPED": "已跳过",
        "Inputs/outputs": "输入输出",
        "Details": "详情",
        "Logs": "日志",
        "Container": "容器",
        "Events": "k8s事件",
        "Workflows": "工作流",
        "Runs": "运行实例",
        "Module reviews": "模块审核",
        "Virtual cluster": "虚拟集群",
        "Data storages": "数据存储",
        "Category": "功能分类",
    }
    assert {k: catalog[k].string for k in terms} == terms


# ------------------------------------------------------------------------------------------------ choosing


@pytest.mark.parametrize(
    ("header", "lang"),
    [
        (None, "en"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("zh", "zh-CN"),
        ("zh-TW", "zh-CN"),
        ("fr-FR, en;q=0.5, zh;q=0.4", "en"),
        ("en;q=0.3, zh-Hans;q=0.9", "zh-CN"),
        ("de, fr", "en"),
        ("zh;q=0, en", "en"),
    ],
)
async def test_the_language_follows_the_browser(web: Web, header: str | None, lang: str) -> None:
    client = web.anonymous()
    response = await client.http.get("/login", headers={"Accept-Language": header} if header else {})
    assert f'<html lang="{lang}">' in response.text
    assert (">登录</h1>" in response.text) == (lang == "zh-CN")


async def test_the_switch_before_log_in_is_a_cookie_that_wins_over_the_browser(web: Web) -> None:
    client = web.anonymous()
    await client.get("/login")
    response = await client.post("/language", {"lang": "zh_CN", "next": "/login"})
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert client.http.cookies["aihub_lang"] == "zh_CN"
    page = await client.http.get("/login", headers={"Accept-Language": "en"})
    assert '<html lang="zh-CN">' in page.text and ">登录</h1>" in page.text


async def test_the_switch_refuses_unknown_languages_and_foreign_redirects(web: Web) -> None:
    client = web.anonymous()
    await client.get("/login")
    assert (await client.post("/language", {"lang": "xx", "next": "/"})).status_code == 400
    response = await client.post("/language", {"lang": "en", "next": "//evil.example"})
    assert response.headers["location"] == "/"
    assert (await client.post("/language", {"lang": "en"}, csrf=False)).status_code == 403


async def test_the_users_choice_is_remembered_after_logout_and_login(web: Web) -> None:
    alice = await web.client("alice")
    page = await alice.get("/workflows")
    assert '<html lang="en">' in page.text and "<h1>Workflows</h1>" in page.text
    await alice.post("/language", {"lang": "zh_CN", "next": "/workflows"})
    assert (await User.get(username="alice")).language == "zh_CN"
    page = await alice.get("/workflows")
    assert '<html lang="zh-CN">' in page.text and "<h1>工作流</h1>" in page.text
    assert 'id="lang-zh_CN" aria-current="true"' in page.text
    response = await alice.post("/logout")
    assert response.headers["location"] == "/login"
    assert "登录" in (await alice.get("/login")).text  # the log-in page keeps the user's language
    # another browser, asking for English: after log-in the user's choice applies
    again = await web.client("alice")
    assert "<h1>工作流</h1>" in (await again.http.get("/workflows", headers={"Accept-Language": "en"})).text
    await again.post("/language", {"lang": "en", "next": "/runs"})
    fresh = await web.client("alice")
    assert "<h1>Runs</h1>" in (await fresh.http.get("/runs", headers={"Accept-Language": "zh-CN"})).text
    # other users are not affected
    bob = await web.client("bob")
    assert "<h1>Runs</h1>" in (await bob.get("/runs")).text


async def zh_client(web: Web, username: str = "alice") -> Client:
    client = await web.client(username)
    await client.post("/language", {"lang": "zh_CN", "next": "/"})
    return client


async def test_statuses_dates_and_errors_are_translated(web: Web) -> None:
    client = await zh_client(web)
    user = await User.get(username="alice")
    from aihub.services.workflows import create_workflow

    version = await create_workflow(user, example())
    response = await client.post(f"/versions/{version.id}/run", {"name": RUN})
    run_url = response.headers["location"]
    await wait_for_run(web.rt, int(run_url.rsplit("/", 1)[1]))
    page = (await client.get(run_url)).text
    assert RUN in page and "年" in page  # the Chinese date form (e.g. 2026年12月5日)
    assert 'id="run-status">成功<' in page and "运行实例" in page
    # what the engine stored in English comes out in Chinese: the run's message, node events
    assert "<dd>所有节点均成功</dd>" in page
    events = html.unescape((await client.get(f"{run_url}/nodes/step1?tab=events", htmx=True)).text)
    assert "<td>已开始</td><td>第 1 次尝试</td>" in events and "<td>已退出</td><td>退出码 0</td>" in events
    assert (
        "all nodes succeeded" in (await (await web.client("admin")).get(run_url)).text
    )  # English stays English
    missing = await client.get("/runs/99999")
    assert missing.status_code == 404 and "未找到。" in missing.text
    # a shell identifier stays ASCII, and says so in Chinese
    refused = await client.post("/admin/categories/new", {"name": "x"})  # alice is no administrator
    assert refused.status_code == 404 and "未找到" in refused.text


# ------------------------------------------------------------------------------------------------ Chinese names


def chinese_spec() -> str:
    data = yaml.safe_load(example())
    data["name"] = WORKFLOW
    data["description"] = "图像分类模型的训练流程"
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


async def save_from_yaml(client: Client, text: str) -> WorkflowVersion:
    """The editor's YAML tab, as a person uses it: switch to YAML, paste the spec, save."""
    from tests.web.test_editor import editor, press

    url = "/workflows/new"
    form = await editor(client, url)
    _, form = await press(client, url, form, "tab-yaml")
    form.set("spec", text)
    response = await client.post(url, form.data("save"))
    assert response.status_code == 303, response.text
    return await WorkflowVersion.get(id=int(response.headers["location"].rsplit("/", 1)[1]))


async def test_chinese_names_in_the_ui(web: Web) -> None:
    admin = await zh_client(web, "admin")
    response = await admin.post("/admin/categories/new", {"name": CATEGORY, "description": "数据清洗与转换"})
    assert response.status_code == 303, response.text
    for name in ("图像处理", "data-cleaning"):
        assert (await admin.post("/admin/categories/new", {"name": name})).status_code == 303
    page = (await admin.get("/admin/categories")).text
    listed = re.findall(r'<tr id="category-([^"]+)">', page)
    assert listed == sorted([CATEGORY, "图像处理", "data-cleaning"])  # sorted by name, Chinese included
    assert (await admin.post("/admin/teams/new", {"name": "视觉组"})).status_code == 303
    new_user = {"username": "zhang", "password": "password-1234", "display_name": "张三", "team_id": ""}
    assert (await admin.post("/admin/users/new", new_user)).status_code == 303
    assert 'value="张三"' in (await admin.get("/admin/users")).text
    # names that reach Kubernetes stay ASCII, and the refusal is in Chinese
    refused = await admin.post("/admin/clusters/new", {"name": "集群", "capacity": "1"})
    assert "虚拟集群名称 '集群' 无效" in html.unescape(refused.text)

    alice = await zh_client(web)
    version = await save_from_yaml(alice, chinese_spec())
    await version.fetch_related("workflow")
    assert version.workflow.name == WORKFLOW
    listed = (await alice.get("/workflows")).text
    assert WORKFLOW in listed and "图像分类模型的训练流程" in listed
    found = (await alice.get("/workflows?q=图像分类")).text
    assert WORKFLOW in found
    assert WORKFLOW not in (await alice.get("/workflows?q=数据")).text
    response = await alice.post(f"/versions/{version.id}/run", {"name": RUN})
    assert response.status_code == 303
    await wait_for_run(web.rt, int(response.headers["location"].rsplit("/", 1)[1]))
    runs = (await alice.get("/runs")).text
    assert RUN in runs and WORKFLOW in runs
    modules = (await alice.get(f"/modules?category={CATEGORY}")).text
    assert f'<option value="{CATEGORY}" selected>{CATEGORY}</option>' in modules
    # a node name must stay a shell identifier: the editor says so in Chinese
    bad = yaml.safe_load(chinese_spec())
    bad["name"] = "另一个"
    bad["nodes"][0]["name"] = "第一步"
    from tests.web.test_editor import editor, press

    form = await editor(alice, "/workflows/new")
    _, form = await press(alice, "/workflows/new", form, "tab-yaml")
    form.set("spec", yaml.safe_dump(bad, allow_unicode=True, sort_keys=False))
    page, _ = await press(alice, "/workflows/new", form, "save")
    assert "'第一步' 不是有效的名称：请使用英文字母、数字和 '_'" in html.unescape(page)


async def gql(client: Client, query: str, **variables: object) -> dict:
    token = (await client.http.post("/graphql", json={"query": LOGIN, "variables": LOGIN_AS})).json()
    bearer = token["data"]["login"]["token"]
    response = await client.http.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {bearer}"},
    )
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


LOGIN = "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }"
LOGIN_AS: dict[str, str] = {}


async def test_chinese_names_through_graphql_export_and_import(web: Web) -> None:
    from tests.web.webapp import ADMIN_PASSWORD, PASSWORD

    admin = web.anonymous()
    LOGIN_AS.update(u="admin", p=ADMIN_PASSWORD)
    data = await gql(admin, 'mutation { createCategory(name: "数据处理", description: "清洗") { name } }')
    assert data["createCategory"]["name"] == CATEGORY
    assert CATEGORY in [c["name"] for c in (await gql(admin, "{ categories { name } }"))["categories"]]

    alice = web.anonymous()
    LOGIN_AS.update(u="alice", p=PASSWORD)
    created = await gql(
        alice,
        "mutation($spec: JSON!) { createWorkflow(spec: $spec) { id } }",
        spec=chinese_spec(),
    )
    version_id = created["createWorkflow"]["id"]
    run = await gql(
        alice,
        "mutation($v: ID!, $n: String) { createRun(versionId: $v, name: $n) { id name } }",
        v=version_id,
        n=RUN,
    )
    assert run["createRun"]["name"] == RUN
    await wait_for_run(web.rt, int(run["createRun"]["id"]))
    listed = await gql(alice, '{ workflows(search: "图像") { items { name description } } }')
    assert listed["workflows"]["items"] == [{"name": WORKFLOW, "description": "图像分类模型的训练流程"}]
    assert await Run.filter(name=RUN).count() == 1

    # export as YAML (the page's link), import it back as another user: the same spec, byte for byte
    page = await web.client("alice")
    response = await page.get(f"/versions/{version_id}/export.yaml")
    assert response.headers["content-disposition"] == (
        'attachment; filename="____-__-v1.yaml"; '
        "filename*=UTF-8''%E5%9B%BE%E5%83%8F%E5%88%86%E7%B1%BB-%E8%AE%AD%E7%BB%83-v1.yaml"
    )
    exported = response.text
    assert f"name: {WORKFLOW}" in exported  # readable Chinese, not \\u escapes
    bob = web.anonymous()
    LOGIN_AS.update(u="bob", p=PASSWORD)
    imported = await gql(bob, "mutation($spec: JSON!) { createWorkflow(spec: $spec) { id } }", spec=exported)
    again = (
        await (await web.client("bob")).get(f"/versions/{imported['createWorkflow']['id']}/export.yaml")
    ).text
    assert again == exported
    assert parse_spec(again) == parse_spec(chinese_spec())
    assert await Workflow.filter(name=WORKFLOW).count() == 2
    assert await Category.filter(name=CATEGORY).count() == 1
