"""Refusals in the reader's language (docs/ui.md, "Languages"): a Chinese user who submits a bad form, pastes an
invalid YAML spec or opens something that is not there reads Chinese, next to the field concerned; GraphQL
(tools) still answers the same refusal in English with the same ``extensions.code`` and ``field``."""

from __future__ import annotations

import html
import re

from aihub.db.models import Category, Module, User
from aihub.services.workflows import create_workflow
from tests.web.forms import Form
from tests.web.test_i18n import zh_client
from tests.web.webapp import ADMIN_PASSWORD, HASH_FILE_FORM, PASSWORD, Client, Web, example

GIT_URL_ZH = "不是这里 git 可以克隆的地址：请使用 https://、http:// 或 ssh://"
REF_ZH = "branch/tag 不能以 '-' 开头"


def error_at(text: str, key: str) -> str:
    """The error shown next to form field ``key``; the field itself is marked invalid and points at it."""
    match = re.search(rf'<p class="field-error" id="err-{re.escape(key)}">(.*?)</p>', text, re.S)
    assert match, f"no error next to {key}"
    assert f'aria-invalid="true" aria-describedby="err-{key}"' in text
    return html.unescape(match[1])


def error_box(text: str) -> str:
    match = re.search(
        r'<div class="error-box" id="error" role="alert" data-code="(\w+)">(.*?)</div>', text, re.S
    )
    assert match, "no error box"
    return f"{match[1]} {html.unescape(re.sub(r'<[^>]+>', '', match[2]))}"


async def graphql(client: Client, username: str, query: str, **variables: object) -> dict:
    login = "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }"
    password = ADMIN_PASSWORD if username == "admin" else PASSWORD
    answer = await client.http.post(
        "/graphql", json={"query": login, "variables": {"u": username, "p": password}}
    )
    token = answer.json()["data"]["login"]["token"]
    response = await client.http.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}", "Accept-Language": "zh-CN"},
    )
    return response.json()


async def test_the_module_form_refuses_a_bad_git_url_and_branch_in_chinese(
    web: Web, category: Category
) -> None:
    client = await zh_client(web)
    form = {**HASH_FILE_FORM, "git_url": "git@example.com:group/repo.git", "ref": "-main", "op": "save"}
    response = await client.post("/modules/new", form)
    assert response.status_code == 400 and '<html lang="zh-CN">' in response.text
    assert error_at(response.text, "git_url") == (
        "'git@example.com:group/repo.git' " + GIT_URL_ZH + "（例如用 ssh://git@host/group/repo.git 代替 "
        "git@host:group/repo.git）"
    )
    assert error_at(response.text, "ref") == REF_ZH
    assert Form(response.text, "module-form").get("git_url") == "git@example.com:group/repo.git"  # kept
    ftp = await client.post("/modules/new", {**form, "git_url": "ftp://example.com/x.git", "ref": "main"})
    assert error_at(ftp.text, "git_url").startswith(
        "不允许使用 git 地址协议 'ftp'；请使用以下之一：https, http, ssh"
    )
    unknown = await client.post(
        "/modules/new", {**form, "category": "不存在", "git_url": "https://h/x", "ref": "main"}
    )
    assert error_at(unknown.text, "category") == f"未知的功能分类 '不存在'（已有分类：{category.name}）"
    # the same refusal through GraphQL, for tools: English, the same code and field, whatever the language
    answer = await graphql(
        web.anonymous(),
        "alice",
        'mutation($c: String!, $g: String!) { createModule(input: {name: "m", category: $c, gitUrl: $g, '
        'ref: "-main"}) { id } }',
        c=category.name,
        g="git@example.com:group/repo.git",
    )
    error = answer["errors"][0]
    assert error["extensions"]["code"] == "INVALID_INPUT" and error["extensions"]["field"] == "gitUrl"
    assert "gitUrl: 'git@example.com:group/repo.git' is not a URL git may clone here" in error["message"]
    assert "ref: the branch/tag must not start with '-'" in error["message"]
    assert await Module.all().count() == 0


async def test_an_invalid_yaml_spec_is_refused_in_chinese(web: Web) -> None:
    client = await zh_client(web)
    page = await client.get("/workflows/new?view=form")
    form = Form(page.text, "editor-body")
    response = await client.post("/workflows/new", form.data("tab-yaml"), htmx=True)
    form = Form(response.text, "editor-body")
    for text, shown in (
        ("nodes: [a", "文档：YAML 无效（第 2 行，第 1 列）：缺少预期的 ',' 或 ']'"),
        ("name: x\nnodes:\n\t- a\n", "出现了不能作为 YAML 记号开头的字符（例如用 Tab 缩进"),
        ("- a\n- b\n", "配置信息必须是包含 'name' 和 'nodes' 的映射（实际为列表）"),
        ("{}", "配置信息为空"),
        (
            "name: x\ncolour: red\nnodes:\n  - name: a\n    size: 1\n",
            "表单无法显示这个配置；请先在这里修正：workflow：未知字段 'colour'；nodes[0]：未知字段 'size'",
        ),
    ):
        form.set("spec", text)
        response = await client.post("/workflows/new", form.data("tab-form"), htmx=True)
        match = re.search(r'id="spec-error"[^>]*>(.*?)</', response.text, re.S)
        assert match, response.text[:500]
        assert shown in html.unescape(match[1])
    # GraphQL: the English text and INVALID_INPUT on the spec
    answer = await graphql(
        web.anonymous(), "alice", "mutation($s: JSON!) { createWorkflow(spec: $s) { id } }", s="- a\n- b\n"
    )
    error = answer["errors"][0]
    assert (error["extensions"]["code"], error["extensions"]["field"]) == ("INVALID_INPUT", "spec")
    assert "the spec must be a mapping with 'name' and 'nodes' (got a list)" in error["message"]


async def test_a_new_workflow_without_a_name_asks_for_one_in_chinese(web: Web) -> None:
    """The editor validates as the user goes: before a name is typed it says the name is wanted (必填), not the
    name's whole character rule about an empty string ('' 不是有效的工作流名称…); a bad name still gets the rule."""
    client = await zh_client(web)
    page = await client.get("/workflows/new?view=form")
    form = Form(page.text, "editor-body")
    response = await client.post("/workflows/new", form.data("add-node"), htmx=True)
    assert error_at(response.text, "name") == "name：必填"
    form = Form(response.text, "editor-body")
    form.set("name", "Bad Name")
    response = await client.post("/workflows/new", form.data(), htmx=True)
    assert error_at(response.text, "name").startswith("name：'Bad Name' 不是有效的工作流名称")


async def test_not_found_pages_name_what_is_missing_in_chinese(web: Web) -> None:
    client = await zh_client(web)
    run = await client.get("/runs/99999")
    assert run.status_code == 404 and error_box(run.text) == "NOT_FOUND 未找到。 未找到运行实例 99999"
    workflow = await client.get("/workflows/99999")
    assert workflow.status_code == 404 and "未找到工作流 99999" in error_box(workflow.text)
    version = await client.get("/versions/99999")
    assert version.status_code == 404 and "未找到工作流版本 99999" in error_box(version.text)
    module = await client.get("/modules/99999")
    assert module.status_code == 404 and "未找到模块 99999" in error_box(module.text)
    huge = await client.get(f"/runs/{2**64}")  # past 64 bits: names nothing
    assert huge.status_code == 404 and f"不存在运行实例 {2**64}" in error_box(huge.text)
    # another user's run looks exactly like a missing one
    spec = await create_workflow(await User.get(username="carol"), example())
    created = await (await web.client("carol")).post(f"/versions/{spec.id}/run", {"name": "mine"})
    run_id = int(created.headers["location"].rsplit("/", 1)[1])
    assert f"未找到运行实例 {run_id}" in error_box((await client.get(f"/runs/{run_id}")).text)
    answer = await graphql(
        web.anonymous(), "alice", "mutation($id: ID!) { stopRun(id: $id) { id } }", id=str(run_id)
    )
    error = answer["errors"][0]
    assert error["message"] == f"run {run_id} not found"
    assert (error["extensions"]["code"], error["extensions"]["field"]) == ("NOT_FOUND", "id")


async def test_admin_forms_and_run_names_are_refused_in_chinese(web: Web) -> None:
    admin = await zh_client(web, "admin")
    storage = await admin.post("/admin/storages/new", {"name": "s2", "path": "rel"})
    assert error_at(storage.text, "new-path") == "path 必须是绝对路径，且不能包含 '..'（实际为 'rel'）"
    cluster = await admin.post("/admin/clusters/new", {"name": "local"})
    assert error_at(cluster.text, "new-name") == "'local' 是本机的内置虚拟集群"
    alice = await zh_client(web)
    version = await create_workflow(await User.get(username="alice"), example())
    response = await alice.post(f"/versions/{version.id}/run", {"name": "长" * 201})
    assert "运行实例名称超过 200 个字符" in response.text
    # a param without a default left empty: the spec's issue, in Chinese
    required = await create_workflow(
        await User.get(username="alice"),
        example().replace("    default: hello\n", "").replace("pass-params-demo", "p2"),
    )
    missing = await alice.post(f"/versions/{required.id}/run", {"name": "r", "param.greeting": ""})
    assert missing.status_code == 400 and "param 'greeting'：必填，但没有提供值" in html.unescape(
        missing.text
    )
