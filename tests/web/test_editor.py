"""The workflow editor: every spec field through the form, structural buttons, the live preview, the YAML tab,
errors next to their fields, copies, templates and examples."""

from __future__ import annotations

import html as html_lib
import re

import yaml

from aihub.db.models import User, Workflow, WorkflowVersion
from aihub.domain.spec import parse_spec
from aihub.services import admin
from aihub.services.workflows import create_workflow
from tests.web.forms import Form
from tests.web.webapp import Client, Web, example

FULL_SPEC = {
    "name": "every-field",
    "description": "all the fields of a spec",
    "params": [
        {"name": "greeting", "description": "what to say", "default": "hello"},
        {"name": "target"},
        {"name": "empty_default", "default": ""},
    ],
    "nodes": [
        {
            "name": "prepare",
            "description": "makes data",
            "image": "python:3.11-slim",
            "command": "echo $greeting > /tmp/out.txt\nmkdir -p /tmp/d",
            "inputs": [{"name": "greeting", "from": "params.greeting"}, {"name": "mode", "value": "fast"}],
            "outputs": [
                {"name": "text_out", "path": "/tmp/out.txt", "type": "text", "description": "the greeting"},
                {"name": "dir_out", "path": "/tmp/d", "type": "path"},
            ],
            "cluster": "gpu-small",
            "sku_count": 2,
            "retries": 3,
            "env": {"EPOCHS": "3", "LR": "0.1"},
            "storages": ["shared"],
        },
        {
            "name": "watch",
            "command": "cat $data; echo $who",
            "task_type": "monitor",
            "depends_on": ["prepare"],
            "inputs": [
                {"name": "data", "from": "prepare.text_out"},
                {"name": "who", "from": "params.target"},
            ],
            "cache": False,
        },
    ],
}


async def editor(client: Client, url: str) -> Form:
    """The editor's "form view" (the canvas: tests/web/test_canvas_pages.py)."""
    response = await client.get(url + ("&" if "?" in url else "?") + "view=form")
    assert response.status_code == 200, response.text
    return Form(response.text, "editor-body")


async def press(client: Client, url: str, form: Form, op: str | None = None) -> tuple[str, Form]:
    """Post the editor like htmx does; returns the fragment and its fields."""
    response = await client.post(url, form.data(op), htmx=True)
    assert response.status_code == 200, response.text
    assert response.text.lstrip().startswith('<div id="editor-body"'), response.text[:200]
    return response.text, Form(response.text, "editor-body")


def error_of(html: str, key: str) -> str:
    match = re.search(rf'<p class="field-error" id="err-{re.escape(key)}">(.*?)</p>', html, re.S)
    assert match, f"no error next to {key}"
    return html_lib.unescape(match[1])


async def installation_choices(web: Web) -> None:
    actor = await User.get(username="admin")
    await admin.create_cluster(actor, name="gpu-small", gpu=1, cpu_millis=4000, memory_mib=8192, capacity=2)
    await admin.create_storage(actor, name="shared", path="/var/tmp/shared")


async def test_the_seed_workflow_built_with_the_form_saves_the_seed_spec(web: Web) -> None:
    """Every step as a user does it: buttons add rows, fields are filled, sources are picked from selects."""
    client = await web.client("alice")
    url = "/workflows/new"
    form = await editor(client, url)
    form.update({"name": "pass-params-demo", "description": "Demo of parameter passing"})
    _, form = await press(client, url, form, "add-param")
    form.update(
        {"params-0-name": "greeting", "params-0-description": "what to say", "params-0-default": "hello"}
    )
    spec = parse_spec(example())
    step1, step2 = spec.nodes
    form.update({"nodes-0-name": "step1", "nodes-0-image": step1.image, "nodes-0-command": step1.command})
    for j, out in enumerate(step1.outputs):
        _, form = await press(client, url, form, "add-output-0")
        form.update({f"nodes-0-outputs-{j}-{k}": getattr(out, k) for k in ("name", "path", "type")})
    html, form = await press(client, url, form, "add-node")
    assert 'id="nodes-1-name"' in html
    form.update({"nodes-1-name": "step2", "nodes-1-command": step2.command})
    form.check("nodes-1-depends_on", "step1")
    for j, decl in enumerate(step2.inputs):
        html, form = await press(client, url, form, "add-input-1")
        form.set(f"nodes-1-inputs-{j}-name", decl.name)
        if decl.source:
            assert f'<option value="{decl.source}"' in html  # offered by the source select
            form.set(f"nodes-1-inputs-{j}-from", decl.source)
        else:
            form.set(f"nodes-1-inputs-{j}-value", decl.value or "")
    response = await client.post(url, form.data("save"), htmx=True)
    assert response.status_code == 204, response.text
    version_id = int(response.headers["hx-redirect"].rsplit("/", 1)[1])
    version = await WorkflowVersion.get(id=version_id)
    assert version.spec == spec.to_dict()


async def test_every_field_of_a_spec_round_trips_through_the_form(web: Web) -> None:
    await installation_choices(web)
    client = await web.client("alice")
    source = await create_workflow(await User.get(username="alice"), FULL_SPEC)
    url = f"/versions/{source.id}/copy"
    form = await editor(client, url)
    assert form.get("target") == "version"
    assert form.get("nodes-0-cluster") == "gpu-small" and form.get("nodes-0-sku_count") == "2"
    assert form.getlist("nodes-0-storages") == ["shared"]
    assert form.getlist("nodes-1-depends_on") == ["prepare"]
    assert form.get("nodes-1-task_type") == "monitor"
    assert form.getlist("params-1-required") == ["0", "1"]
    response = await client.post(url, form.data("save"))
    assert response.status_code == 303, response.text
    copy = await WorkflowVersion.get(id=int(response.headers["location"].rsplit("/", 1)[1]))
    assert copy.workflow_id == source.workflow_id and copy.number == 2  # type: ignore[attr-defined]
    assert copy.spec == parse_spec(FULL_SPEC).to_dict()


async def test_structural_buttons_add_and_remove_rows_and_nodes(web: Web) -> None:
    client = await web.client("alice")
    url = "/workflows/new"
    form = await editor(client, url)
    form.update({"name": "buttons", "nodes-0-command": "echo a"})
    _, form = await press(client, url, form, "add-node")
    _, form = await press(client, url, form, "add-node")
    assert [form.get(f"nodes-{i}-name") for i in range(3)] == ["step1", "step2", "step3"]
    form.check("nodes-2-depends_on", "step2").check("nodes-2-depends_on", "step1")
    for op in ("add-env-2", "add-env-2", "add-output-2", "add-input-2", "add-param"):
        _, form = await press(client, url, form, op)
    assert len(form.getlist("nodes-2-env-1-key")) == 1 and form.getlist("nodes-2-outputs-0-name") == [""]
    assert form.getlist("params-0-name") == [""] and form.getlist("nodes-2-inputs-0-name") == [""]
    form.update({"nodes-2-env-0-key": "A", "nodes-2-env-1-key": "B"})
    _, form = await press(client, url, form, "remove-env-2-0")
    assert form.get("nodes-2-env-0-key") == "B" and not form.getlist("nodes-2-env-1-key")
    for op in ("remove-output-2-0", "remove-input-2-0", "remove-param-0"):
        _, form = await press(client, url, form, op)
    assert not form.getlist("nodes-2-outputs-0-name") and not form.getlist("nodes-2-inputs-0-name")
    assert not form.getlist("params-0-name")
    html, form = await press(client, url, form, "remove-node-1")  # step2: step3 no longer depends on it
    assert [form.get(f"nodes-{i}-name") for i in range(2)] == ["step1", "step3"]
    assert form.getlist("nodes-1-depends_on") == ["step1"]
    assert 'id="preview-step2"' not in html
    _, same = await press(client, url, form, "remove-node-9")  # out of range: nothing happens
    assert same.fields == form.fields


async def test_renaming_a_node_param_or_output_carries_its_references(web: Web) -> None:
    client = await web.client("alice")
    source = await create_workflow(await User.get(username="alice"), example())
    url = f"/versions/{source.id}/copy"
    form = await editor(client, url)
    form.update({"nodes-0-name": "prepare", "params-0-name": "salutation", "nodes-0-outputs-0-name": "first"})
    html, form = await press(client, url, form)
    assert 'id="editor-issues"' not in html, html
    assert form.getlist("nodes-1-depends_on") == ["prepare"]
    sources = [form.get(f"nodes-1-inputs-{j}-from") for j in range(4)]
    assert sources == ["prepare.first", "prepare.output_param2", "prepare.output_param3", "params.salutation"]


async def test_the_preview_redraws_as_the_user_edits(web: Web) -> None:
    client = await web.client("alice")
    url = "/workflows/new"
    form = await editor(client, url)
    form.update({"name": "preview", "nodes-0-command": "echo a"})
    html, form = await press(client, url, form, "add-node")
    assert 'id="preview-step1"' in html and 'id="preview-step2"' in html
    assert html.count('class="edge"') == 0
    form.update({"nodes-1-command": "echo b"}).check("nodes-1-depends_on", "step1")
    html, form = await press(client, url, form)  # a change event: no button
    assert html.count('class="edge"') == 1
    form.update({"nodes-1-name": "second"})
    html, form = await press(client, url, form)
    assert 'id="preview-second"' in html and 'id="preview-step2"' not in html
    # a cycle is drawn without its closing edge and reported next to the dependency that closes it
    form.check("nodes-0-depends_on", "second")
    html, _ = await press(client, url, form)
    assert 'id="preview-step1"' in html and "cycle: " in error_of(html, "nodes-0-depends_on")


async def test_errors_appear_next_to_the_fields_they_concern(web: Web) -> None:
    client = await web.client("alice")
    url = "/workflows/new"
    form = await editor(client, url)
    form.update({"name": "Bad Name", "nodes-0-command": "echo a", "nodes-0-retries": "abc"})
    form.update({"nodes-0-cluster": "nowhere"})
    for op in ("add-env-0", "add-output-0", "add-param", "add-node", "add-input-1"):
        _, form = await press(client, url, form, op)
    form.update(
        {"nodes-0-env-0-value": "orphan", "nodes-0-outputs-0-name": "o", "nodes-0-outputs-0-path": "rel"}
    )
    form.update({"params-0-name": "1bad", "nodes-1-command": ""})
    form.update({"nodes-1-inputs-0-name": "x", "nodes-1-inputs-0-from": "ghost.out"})
    html, _ = await press(client, url, form)
    assert "is not a valid workflow name" in error_of(html, "name")
    assert 'id="name" name="name" value="Bad Name" placeholder="my-workflow" aria-invalid="true"' in html
    assert "must be an integer" in error_of(html, "nodes-0-retries")
    assert "unknown virtual cluster 'nowhere'" in error_of(html, "nodes-0-cluster")
    assert "needs a variable name" in error_of(html, "nodes-0-env-0")
    assert "absolute path" in error_of(html, "nodes-0-outputs-0-path")
    assert "not a valid name" in error_of(html, "params-0-name")
    assert "needs a command" in error_of(html, "nodes-1-command")
    assert "no node 'ghost'" in error_of(html, "nodes-1-inputs-0-from")
    assert 'class="node has-error"' in html
    page = await client.post(url, form.data("save"))  # no htmx: the full page, 400, nothing saved
    assert page.status_code == 400 and page.text.startswith("<!doctype html>")
    assert "must be an integer" in error_of(page.text, "nodes-0-retries")
    assert await Workflow.all().count() == 0


async def test_a_taken_workflow_name_is_reported_next_to_the_name(web: Web) -> None:
    client = await web.client("alice")
    await create_workflow(await User.get(username="alice"), example())
    form = await editor(client, "/workflows/new?from=example:pass-params-demo")
    assert form.get("name") == "pass-params-demo-2"  # prefilled with a free name
    form.set("name", "pass-params-demo")
    response = await client.post("/workflows/new", form.data("save"), htmx=True)
    assert response.status_code == 200
    assert "you already have a workflow named 'pass-params-demo'" in error_of(response.text, "name")


async def test_the_yaml_tab_edits_the_same_spec(web: Web) -> None:
    client = await web.client("alice")
    source = await create_workflow(await User.get(username="alice"), example())
    url = f"/versions/{source.id}/copy"
    form = await editor(client, url)
    html, form = await press(client, url, form, "tab-yaml")
    assert form.get("mode") == "yaml" and 'id="nodes-0-name"' not in html
    assert form.get("spec") == parse_spec(example()).to_yaml()
    edited = yaml.safe_load(form.get("spec"))
    edited["nodes"][1]["retries"] = 4
    form.set("spec", yaml.safe_dump(edited, sort_keys=False))
    html, form = await press(client, url, form)  # a change in the YAML tab redraws the preview too
    assert 'id="preview-step2"' in html
    html, form = await press(client, url, form, "tab-form")
    assert form.get("mode") == "form" and form.get("nodes-1-retries") == "4"
    # text that is not a spec mapping, or has what the form cannot show, stays in the YAML tab with the reason
    _, form = await press(client, url, form, "tab-yaml")
    for text, reason in (
        ("nodes: [a", "invalid YAML"),
        ("name: x\nnodes:\n  - name: a\n    colour: red\n", "colour"),
    ):
        form.set("spec", text)
        html, kept = await press(client, url, form, "tab-form")
        assert kept.get("mode") == "yaml" and reason in html
        assert 'id="spec-error"' in html
    form.set("spec", yaml.safe_dump(edited, sort_keys=False))
    response = await client.post(url, form.data("save"))
    copy = await WorkflowVersion.get(id=int(response.headers["location"].rsplit("/", 1)[1]))
    assert copy.spec["nodes"][1]["retries"] == 4


async def test_copy_as_a_new_workflow(web: Web) -> None:
    client = await web.client("alice")
    source = await create_workflow(await User.get(username="alice"), example())
    url = f"/versions/{source.id}/copy"
    form = await editor(client, url)
    form.set("target", "workflow")
    html, form = await press(client, url, form)
    assert 'id="name" name="name" value="pass-params-demo" placeholder' in html  # editable now
    form.set("name", "my-copy")
    response = await client.post(url, form.data("save"))
    assert response.status_code == 303
    copy = await WorkflowVersion.get(id=int(response.headers["location"].rsplit("/", 1)[1]))
    await copy.fetch_related("workflow")
    assert copy.workflow.name == "my-copy" and copy.number == 1


async def test_others_may_copy_a_template_only_as_a_new_workflow(web: Web) -> None:
    owner = await web.client("alice")
    source = await create_workflow(await User.get(username="alice"), example())
    other = await web.client("carol")
    assert (await other.get(f"/versions/{source.id}/copy")).status_code == 404  # not visible to carol
    marked = await owner.post(f"/versions/{source.id}/template", {"is_template": "1"})
    assert marked.status_code == 303
    new_page = await other.get("/workflows/new")
    assert f'<option value="version:{source.id}"' in new_page.text  # listed as a template
    form = await editor(other, f"/workflows/new?from=version:{source.id}")
    assert form.get("nodes-1-name") == "step2"
    form = await editor(other, f"/versions/{source.id}/copy")
    assert form.get("target") == "workflow" and form.get("name") == "pass-params-demo-copy"
    form.set("target", "version")  # the radio is disabled; a crafted post is refused next to it
    response = await other.post(f"/versions/{source.id}/copy", form.data("save"), htmx=True)
    assert "may add versions" in error_of(response.text, "target")
    assert await WorkflowVersion.filter(workflow_id=source.workflow_id).count() == 1  # type: ignore[attr-defined]
    response = await other.post(f"/versions/{source.id}/copy", form.set("target", "workflow").data("save"))
    assert response.status_code == 303


async def test_starting_points_that_do_not_exist_are_404(web: Web) -> None:
    client = await web.client("alice")
    assert (await client.get("/workflows/new?from=example:nope")).status_code == 404
    assert (await client.get("/workflows/new?from=version:999")).status_code == 404
    blank = await editor(client, "/workflows/new?from=garbage")
    assert blank.get("nodes-0-name") == "step1"


async def test_the_editor_needs_the_csrf_token(web: Web) -> None:
    client = await web.client("alice")
    form = await editor(client, "/workflows/new")
    response = await client.post("/workflows/new", form.remove(["csrf_token"]).data("save"), csrf=False)
    assert response.status_code == 403
