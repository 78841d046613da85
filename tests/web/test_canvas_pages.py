"""The editor's canvas, as its posts reach the server: nodes dropped from the palette at a point, moved,
connected (a cycle refused at once), deleted, arranged; the side panel; positions saved with the version and
shown on the version page and in copies. The gestures themselves are tested in tests/browser/test_canvas.py."""

from __future__ import annotations

import html as html_lib
import re

import yaml

from aihub.db.models import User, WorkflowVersion
from aihub.domain.spec import parse_spec
from aihub.services.workflows import create_workflow
from tests.web.forms import Form
from tests.web.webapp import Client, Web, example


async def canvas(client: Client, url: str) -> tuple[str, Form]:
    response = await client.get(url)
    assert response.status_code == 200, response.text
    return response.text, Form(response.text, "editor-body")


async def act(client: Client, url: str, form: Form, action: str = "", **fields: str) -> tuple[str, Form]:
    """A canvas gesture as canvas.js posts it: the ``act`` field (no button) and the fields it set."""
    form.set("act", action)
    form.update({k.replace("_", "-"): v for k, v in fields.items()})
    response = await client.post(url, form.data(), htmx=True)
    assert response.status_code == 200, response.text
    assert response.text.lstrip().startswith('<div id="editor-body"'), response.text[:200]
    return response.text, Form(response.text, "editor-body")


def node_at(html: str, index: int) -> tuple[int, int]:
    match = re.search(rf'id="cnode-{index}" data-index="{index}" data-x="(-?\d+)" data-y="(-?\d+)"', html)
    assert match, f"no node {index} on the canvas"
    return int(match[1]), int(match[2])


def input_names(form: Form, node: int) -> list[str]:
    names: list[str] = []
    while values := form.getlist(f"nodes-{node}-inputs-{len(names)}-name"):
        names.append(values[-1])
    return names


def notice(html: str) -> str:
    match = re.search(r'<p class="error-box" id="canvas-notice" role="alert">(.*?)</p>', html, re.S)
    return html_lib.unescape(match[1]) if match else ""


async def test_a_new_workflow_starts_on_an_empty_canvas_and_the_form_view_is_one_tab_away(web: Web) -> None:
    client = await web.client("alice")
    html, form = await canvas(client, "/workflows/new")
    assert 'id="canvas"' in html and 'role="group"' in html and 'id="cnode-0"' not in html
    assert form.get("view") == "canvas" and not form.getlist("nodes-0-name")
    assert re.search(r'<button[^>]*id="add-node"[^>]*>plain node</button>', html)
    assert 'id="tab-form"' in html and "Form view" in html
    response = await client.post("/workflows/new", form.data("tab-form"), htmx=True)
    assert 'id="canvas"' not in response.text and 'id="add-node"' in response.text
    assert Form(response.text, "editor-body").get("view") == "form"


async def test_the_seed_example_built_with_canvas_gestures_saves_positions(web: Web) -> None:
    client = await web.client("alice")
    url = "/workflows/new"
    _, form = await canvas(client, url)
    html, form = await act(client, url, form, "add-node", drop_x="100", drop_y="80")
    assert node_at(html, 0) == (100, 80) and form.get("selected") == "0"
    assert 'id="nodes-0-name"' in html  # its panel is open
    html, form = await act(client, url, form, "add-node", drop_x="130.6", drop_y="260")
    assert node_at(html, 1) == (131, 260) and form.get("selected") == "1"
    assert [form.get("nodes-0-name"), form.get("nodes-1-name")] == ["step1", "step2"]
    html, form = await act(client, url, form, "connect-0-1", drop_x="", drop_y="")
    assert 'id="edge-0-1"' in html and form.getlist("nodes-1-depends_on") == ["step1"]
    assert notice(html) == ""
    # a move is the node's x and y fields
    html, form = await act(client, url, form, "", **{"nodes-0-x": "140", "nodes-0-y": "40"})
    assert node_at(html, 0) == (140, 40)
    spec = parse_spec(example())
    step1, step2 = spec.nodes
    form.update({"name": spec.name, "nodes-1-command": step2.command})
    html, form = await act(client, url, form, "select-0")
    assert form.get("selected") == "0" and 'id="nodes-0-command"' in html
    form.update({"nodes-0-image": step1.image, "nodes-0-command": step1.command})
    for j, out in enumerate(step1.outputs):
        response = await client.post(url, form.data("add-output-0"), htmx=True)
        form = Form(response.text, "editor-body")
        form.update({f"nodes-0-outputs-{j}-{k}": getattr(out, k) for k in ("name", "path", "type")})
    html, form = await act(client, url, form, "select-1")
    for j, decl in enumerate(step2.inputs[:3]):
        response = await client.post(url, form.data("add-input-1"), htmx=True)
        html, form = response.text, Form(response.text, "editor-body")
        assert f'<option value="{decl.source}"' in html  # an output of an ancestor as drawn
        form.update({f"nodes-1-inputs-{j}-name": decl.name, f"nodes-1-inputs-{j}-from": decl.source or ""})
    response = await client.post(url, form.data("save"), htmx=True)
    assert response.status_code == 204, response.text
    version = await WorkflowVersion.get(id=int(response.headers["hx-redirect"].rsplit("/", 1)[1]))
    saved = parse_spec(version.spec)
    assert [(n.ui.x, n.ui.y) for n in saved.nodes if n.ui] == [(140, 40), (131, 260)]
    assert [i.source for i in saved.node("step2").inputs] == [i.source for i in step2.inputs[:3]]

    # the version page draws the nodes where they were put (the drawing starts at the margin: 16)
    page = (await client.get(f"/versions/{version.id}")).text
    assert re.search(r'id="node-step1"[^>]* x="25" y="16"', page), page
    assert re.search(r'id="node-step2"[^>]* x="16" y="236"', page)
    # copy and new version start from the same positions
    for path in (f"/versions/{version.id}/copy", f"/versions/{version.id}/new-version"):
        html, form = await canvas(client, path)
        assert node_at(html, 0) == (140, 40) and node_at(html, 1) == (131, 260)
        assert (form.get("nodes-1-x"), form.get("nodes-1-y")) == ("131", "260")


async def test_a_dependency_that_closes_a_cycle_is_refused_at_once(web: Web) -> None:
    client = await web.client("alice")
    url = "/workflows/new"
    _, form = await canvas(client, url)
    for _ in range(3):
        _, form = await act(client, url, form, "add-node")
    _, form = await act(client, url, form, "connect-0-1")
    _, form = await act(client, url, form, "connect-1-2")
    html, form = await act(client, url, form, "connect-2-0")
    assert notice(html) == "step3 → step1 is refused: it would close the cycle step1 → step2 → step3 → step1"
    assert form.getlist("nodes-0-depends_on") == []
    html, form = await act(client, url, form, "connect-1-1")
    assert notice(html) == "step2 cannot depend on itself"
    html, _ = await act(client, url, form, "")
    assert notice(html) == ""  # the message goes with the next action


async def test_deleting_a_node_removes_its_edges_and_flags_the_inputs_that_used_it(web: Web) -> None:
    client = await web.client("alice")
    source = await create_workflow(await User.get(username="alice"), example())
    url = f"/versions/{source.id}/copy"
    html, form = await canvas(client, url)
    assert 'id="edge-0-1"' in html
    html, form = await act(client, url, form, "remove-node-0")
    assert 'id="edge-' not in html and form.get("nodes-0-name") == "step2"
    assert form.getlist("nodes-0-depends_on") == []
    # step2's three inputs took step1's outputs: removed with it, and flagged on step2 (outlined, its panel
    # open with the names); the draft is valid again
    assert not [n for n in input_names(form, 0) if n.startswith("step1param")] and input_names(form, 0)
    assert re.search(r'class="cnode has-warning selected" id="cnode-0"', html)
    flag = re.search(r'id="nodes-0-flagged" role="alert">([^<]*)<', html)
    assert flag is not None
    assert html_lib.unescape(flag[1]) == (
        "inputs step1param1, step1param2, step1param3 were removed: they took outputs of a node that is gone "
        "from this node's ancestors (it was deleted)"
    )
    assert "has-error" not in html
    html, form = await act(client, url, form, "")
    assert 'id="nodes-0-flagged"' not in html  # said once, with the change


async def test_deleting_an_edge_and_arranging(web: Web) -> None:
    client = await web.client("alice")
    url = "/workflows/new"
    _, form = await canvas(client, url)
    _, form = await act(client, url, form, "add-node", drop_x="500", drop_y="500")
    _, form = await act(client, url, form, "add-node", drop_x="20", drop_y="20")
    _, form = await act(client, url, form, "connect-0-1")
    html, form = await act(client, url, form, "disconnect-0-1")
    assert 'id="edge-0-1"' not in html and form.getlist("nodes-1-depends_on") == []
    assert 'id="nodes-1-flagged"' not in html  # no input took an output of the parent: nothing to flag
    _, form = await act(client, url, form, "connect-0-1")
    response = await client.post(url, form.data("arrange"), htmx=True)
    html = response.text
    (x0, y0), (x1, y1) = node_at(html, 0), node_at(html, 1)
    assert y0 < y1 and x0 == x1  # layered: the parent above its child


async def test_unknown_variables_in_a_command_are_flagged_on_the_node(web: Web) -> None:
    client = await web.client("alice")
    url = "/workflows/new"
    _, form = await canvas(client, url)
    _, form = await act(client, url, form, "add-node")
    form.update({"nodes-0-command": "x=1; echo $x $greting ${HOME} $AI_HUB_RUN_ID"})
    html, form = await act(client, url, form, "")
    assert "has-warning" in html
    assert "No input is called $greting: it expands to an empty string." in html
    response = await client.post(url, form.data("add-input-0"), htmx=True)
    form = Form(response.text, "editor-body").update({"nodes-0-inputs-0-name": "greting"})
    html, _ = await act(client, url, form, "")
    assert "has-warning" not in html and "No input is called $" not in html


async def test_a_failed_save_opens_the_panel_of_the_broken_node(web: Web) -> None:
    client = await web.client("alice")
    url = "/workflows/new"
    _, form = await canvas(client, url)
    _, form = await act(client, url, form, "add-node")
    _, form = await act(client, url, form, "add-node")
    form.update({"name": "broken", "nodes-0-command": "echo a", "nodes-1-command": "echo b"})
    form.update({"nodes-1-retries": "500"})
    _, form = await act(client, url, form, "deselect")
    response = await client.post(url, form.data("save"), htmx=True)
    assert response.status_code == 200
    html = response.text
    assert Form(html, "editor-body").get("selected") == "1"
    assert re.search(r'class="cnode has-error[^"]*" id="cnode-1"', html)
    assert "must be at most 100" in html_lib.unescape(html)
    assert await WorkflowVersion.all().count() == 0  # nothing saved


async def test_the_version_page_shows_a_node_as_labels_values_and_tables(web: Web) -> None:
    client = await web.client("alice")
    version = await create_workflow(await User.get(username="alice"), example())
    html = html_lib.unescape((await client.get(f"/versions/{version.id}/nodes/step2", htmx=True)).text)
    assert '<dl class="kv" id="node-fields"' in html and "<dt>Kind</dt><dd" in html
    assert '<table class="rows" id="node-inputs">' in html and "<code>step1.output_param1</code>" in html
    assert '<pre class="spec" id="node-command"' in html and '"name"' not in html  # no raw JSON
    step1 = html_lib.unescape((await client.get(f"/versions/{version.id}/nodes/step1", htmx=True)).text)
    assert '<table class="rows" id="node-outputs">' in step1 and "<code>/tmp/outparam1.txt</code>" in step1


async def test_a_large_version_posts_more_fields_than_starlettes_default(web: Web) -> None:
    """150 nodes, a dozen fields each: beyond the 1,000 fields a form parser allows by default."""
    nodes = [
        {"name": f"n{i:03d}", "command": "echo $x", "inputs": [{"name": "x", "value": "1"}]}
        for i in range(150)
    ]
    for i in range(1, 150):
        nodes[i]["depends_on"] = [f"n{i - 1:03d}"]
    source = await create_workflow(await User.get(username="alice"), {"name": "long-chain", "nodes": nodes})
    client = await web.client("alice")
    url = f"/versions/{source.id}/copy"
    html, form = await canvas(client, url)
    assert len(form.fields) > 1000 and html.count('class="cnode') == 150
    html, _ = await act(client, url, form, "", **{"nodes-75-x": "999"})
    assert node_at(html, 75) == (999, int(form.get("nodes-75-y")))


async def test_a_move_to_a_valid_place_is_answered_without_a_re_render(web: Web) -> None:
    client = await web.client("alice")
    url = "/workflows/new"
    _, form = await canvas(client, url)
    _, form = await act(client, url, form, "add-node")
    form.set("act", "move-0").update({"nodes-0-x": "300", "nodes-0-y": "-40"})
    response = await client.post(url, form.data(), htmx=True)
    assert response.status_code == 204 and response.text == ""
    form.set("act", "")
    html, _ = await act(client, url, form, "")
    assert node_at(html, 0) == (300, -40)  # the next post carries the place
    for x in ("abc", "1e9"):  # not a place: re-rendered, the node drawn at a valid one
        form.set("act", "move-0").set("nodes-0-x", x)
        response = await client.post(url, form.data(), htmx=True)
        assert response.status_code == 200 and 'id="cnode-0"' in response.text


async def test_positions_through_the_api_export_and_a_copy(web: Web) -> None:
    """The API and the YAML export keep ``ui``; a spec without it (the CLI's, older files) stays valid."""
    from tests.web.test_i18n import LOGIN, LOGIN_AS, gql
    from tests.web.webapp import PASSWORD

    spec = yaml.safe_load(example())
    spec["nodes"][0]["ui"] = {"x": 10, "y": 20}
    spec["nodes"][1]["ui"] = {"x": 10.4, "y": 140}
    LOGIN_AS.update(u="alice", p=PASSWORD)
    api = web.anonymous()
    created = await gql(api, "mutation($s: JSON!) { createWorkflow(spec: $s) { id spec } }", s=spec)
    nodes = created["createWorkflow"]["spec"]["nodes"]
    assert [n["ui"] for n in nodes] == [{"x": 10, "y": 20}, {"x": 10, "y": 140}]
    version_id = created["createWorkflow"]["id"]
    copied = await gql(
        api,
        "mutation($v: ID!) { copyWorkflowVersion(versionId: $v, asNewWorkflow: true) { spec } }",
        v=version_id,
    )
    assert [n["ui"] for n in copied["copyWorkflowVersion"]["spec"]["nodes"]] == [
        {"x": 10, "y": 20},
        {"x": 10, "y": 140},
    ]
    exported = (await (await web.client("alice")).get(f"/versions/{version_id}/export.yaml")).text
    assert parse_spec(exported).node("step2").ui is not None
    broken = {**spec, "nodes": [{**spec["nodes"][0], "ui": {"x": "left", "y": 0}}]}
    token = (await gql(api, LOGIN, u="alice", p=PASSWORD))["login"]["token"]
    answer = await api.http.post(
        "/graphql",
        json={"query": "mutation($s: JSON!) { createWorkflow(spec: $s) { id } }", "variables": {"s": broken}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert "ui.x: must be a number (got 'left')" in answer.text


async def test_deleting_an_edge_removes_and_flags_the_inputs_that_took_the_parents_outputs(web: Web) -> None:
    client = await web.client("alice")
    source = await create_workflow(await User.get(username="alice"), example())
    url = f"/versions/{source.id}/copy"
    html, form = await canvas(client, url)
    html, form = await act(client, url, form, "disconnect-0-1")
    assert 'id="edge-0-1"' not in html and form.getlist("nodes-1-depends_on") == []
    assert not [n for n in input_names(form, 1) if n.startswith("step1param")] and input_names(form, 1)
    flag = re.search(r'id="nodes-1-flagged" role="alert">([^<]*)<', html)
    assert flag is not None and html_lib.unescape(flag[1]).endswith("(the dependency on it was removed)")


def swap_out_of_band(page: str, answer: str) -> str:
    """What htmx makes of ``page`` with ``answer``'s out-of-band parts (the side panel, the ``selected`` field,
    a node's hidden fields): each replaces the element of its id."""
    parts = re.findall(r'<(aside|div|input)\b[^>]*\bid="([^"]+)"[^>]*hx-swap-oob="true"[^>]*>', answer)
    assert parts, answer[:300]
    for tag, element_id in parts:
        new = _element(answer, tag, element_id).replace(' hx-swap-oob="true"', "")
        page = page.replace(_element(page, tag, element_id), new, 1)
    return page


def _element(html: str, tag: str, element_id: str) -> str:
    start = html.index(f'id="{element_id}"')
    start = html.rindex(f"<{tag}", 0, start)
    if tag == "input":
        return html[start : html.index(">", start) + 1]
    return html[start : html.index(f"</{tag}>", start) + len(f"</{tag}>")]


async def test_a_new_selection_of_an_unchanged_draft_is_answered_with_the_side_panel_alone(web: Web) -> None:
    nodes = [{"name": f"n{i}", "command": f"echo {i}", "env": {"K": str(i)}} for i in range(40)]
    for i in range(1, 40):
        nodes[i]["depends_on"] = [f"n{i - 1}"]
    source = await create_workflow(await User.get(username="alice"), {"name": "forty", "nodes": nodes})
    client = await web.client("alice")
    url = f"/versions/{source.id}/copy"
    page, form = await canvas(client, url)
    for chosen, previous in ((3, None), (17, 3), (17, 17)):
        response = await client.post(url, form.set("act", f"select-{chosen}").data(), htmx=True)
        assert response.status_code == 200 and response.headers["hx-reswap"] == "none"
        answer = response.text
        assert 'id="editor-body"' not in answer and len(answer) < len(page) / 4
        assert re.search(r'<aside [^>]*id="side-panel" hx-swap-oob="true"', answer)
        assert f'id="nodes-{chosen}-command"' in answer  # the panel shows the chosen node's fields
        page = swap_out_of_band(page, answer)
        form = Form(page, "editor-body").set("act", "")
        assert form.get("selected") == str(chosen)
        if previous is not None and previous != chosen:  # the node shown before: its fields hidden again
            assert f'<input type="hidden" name="nodes-{previous}-command" value="echo {previous}">' in page
        # every node's fields are posted exactly once: the panel's or the hidden ones
        assert [form.getlist(f"nodes-{i}-name") for i in range(40)] == [[f"n{i}"] for i in range(40)]
        assert [form.getlist(f"nodes-{i}-env-0-value") for i in range(40)] == [[str(i)] for i in range(40)]

    # the panel closed the same way; then the draft saves as it came
    response = await client.post(url, form.data("deselect"), htmx=True)
    assert response.headers["hx-reswap"] == "none" and 'id="side-panel-empty"' in response.text
    page = swap_out_of_band(page, response.text)
    form = Form(page, "editor-body")
    assert form.get("selected") == "" and form.getlist("nodes-17-name") == ["n17"]
    response = await client.post(url, form.data("save"), htmx=True)
    assert response.status_code == 204, response.text
    saved = await WorkflowVersion.get(id=int(response.headers["hx-redirect"].rsplit("/", 1)[1]))
    spec = parse_spec(saved.spec)
    assert [(n.name, n.command, n.env, n.depends_on) for n in spec.nodes] == [
        (n["name"], n["command"], n["env"], n.get("depends_on", [])) for n in nodes
    ]


async def test_a_selection_after_an_edit_re_renders_the_whole_editor(web: Web) -> None:
    """The page's digest of the draft no longer matches: the server's verdict on the edit must be drawn too."""
    source = await create_workflow(await User.get(username="alice"), example())
    client = await web.client("alice")
    url = f"/versions/{source.id}/copy"
    _, form = await canvas(client, url)
    form.set("nodes-0-name", "renamed")
    html, form = await act(client, url, form, "select-1")  # asserts the whole editor came back
    assert form.get("selected") == "1" and ">renamed</text>" in html
    sources = [v for k, v in form.fields if k.startswith("nodes-1-inputs-") and k.endswith("-from") and v]
    assert [s for s in sources if not s.startswith("params.")] == [
        f"renamed.output_param{i}" for i in (1, 2, 3)
    ]
    # a forged or stale digest is no shortcut either
    form.set("draft-digest", "0" * 32)
    html, form = await act(client, url, form, "select-0")
    assert form.get("selected") == "0"
    # a post that is not htmx's (no script) gets the whole page
    response = await client.post(url, form.set("act", "select-1").data())
    assert response.status_code == 200 and 'id="editor-body"' in response.text
