"""The seed's quick start with the workflow editor's form view (not the canvas, not YAML), in a real Chromium: basic info, an initial
param, step1 with its three outputs, step2 whose inputs are picked from selects, the DAG preview following the
edits; save, see the version's DAG, run it and watch it turn green."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from playwright.sync_api import Page, expect
from test_quick_start import GREEN, LIVE_TIMEOUT, STEP2_LINES, expect_node, log_in, shot, start_run
from webserver import WebServer

from aihub.domain.spec import OutputDecl, parse_spec

REPO = Path(__file__).resolve().parents[2]
SEED = parse_spec((REPO / "examples" / "pass-params-demo.yaml").read_text())


def add_row(page: Page, button: str, first_field: str) -> None:
    page.locator(button).click()
    expect(page.locator(first_field)).to_be_visible()


def fill_outputs(page: Page, index: int, outputs: Sequence[OutputDecl]) -> None:
    """Adds and fills node ``index``'s output rows (the form view and the canvas's panel share the fields)."""
    for j, out in enumerate(outputs):
        add_row(page, f"#nodes-{index}-add-output", f"#nodes-{index}-outputs-{j}-name")
        page.locator(f"#nodes-{index}-outputs-{j}-name").fill(out.name)
        page.locator(f"#nodes-{index}-outputs-{j}-path").fill(out.path)
        page.locator(f"#nodes-{index}-outputs-{j}-type").select_option(out.type)


def test_the_seed_workflow_built_in_the_editor_form(page: Page, server: WebServer) -> None:
    csp_errors: list[str] = []
    page.on("console", lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None)
    log_in(page)
    page.get_by_role("link", name="Workflows").click()
    page.get_by_role("link", name="Create workflow").click()
    page.get_by_role(
        "tab", name="Form view"
    ).click()  # the canvas is the default (tests/browser/test_canvas.py)
    page.get_by_role("button", name="Add plain node").click()
    expect(page.locator("#nodes-0-name")).to_have_value("step1")

    page.locator("#name").fill(SEED.name)
    page.locator("#description").fill(SEED.description)
    add_row(page, "#add-param", "#params-0-name")
    param = SEED.params[0]
    page.locator("#params-0-name").fill(param.name)
    page.locator("#params-0-description").fill(param.description)
    page.locator("#params-0-default").fill(param.default or "")

    step1, step2 = SEED.nodes
    page.locator("#nodes-0-image").fill(step1.image)
    page.locator("#nodes-0-command").fill(step1.command)
    fill_outputs(page, 0, step1.outputs)

    page.locator("#add-node").click()
    expect(page.locator("#nodes-1-name")).to_have_value("step2")
    expect(page.locator("#preview-step2")).to_be_visible()  # the preview follows the edits
    expect(page.locator("#preview-svg path.edge")).to_have_count(0)
    page.locator("#nodes-1-command").fill(step2.command)
    page.locator("#nodes-1-depends_on-step1").check()
    expect(page.locator("#preview-svg path.edge")).to_have_count(1)
    for j, decl in enumerate(step2.inputs):
        add_row(page, "#nodes-1-add-input", f"#nodes-1-inputs-{j}-name")
        page.locator(f"#nodes-1-inputs-{j}-name").fill(decl.name)
        if decl.source:
            page.locator(f"#nodes-1-inputs-{j}-from").select_option(decl.source)
            expect(page.locator(f"#nodes-1-inputs-{j}-value")).to_have_count(0)
        else:
            page.locator(f"#nodes-1-inputs-{j}-value").fill(decl.value or "")
    page.locator("#nodes-1-description").click()  # leave the last field, as a user does before saving
    expect(page.locator("#editor-issues")).to_have_count(0)
    shot(page, "editor")

    page.locator("#save-workflow").click()
    expect(page.locator("#run-version")).to_be_visible()
    expect(page.locator("#node-step1")).to_be_visible()
    expect(page.locator("#node-step2")).to_be_visible()
    expect(page.locator(".dag path.edge")).to_have_count(1)
    assert page.locator("pre.spec").inner_text().rstrip() == SEED.to_yaml().rstrip()

    start_run(page, "from-the-editor")
    expect_node(page, "step2", "SUCCEEDED", GREEN)
    expect(page.locator("#run-status")).to_have_text("SUCCEEDED", timeout=LIVE_TIMEOUT)
    page.locator("#node-step2 rect").click()
    page.locator("#tab-logs").click()
    expect(page.locator("#log-lines .l")).to_have_text(STEP2_LINES)
    expect(page.locator("#timeline rect.bar")).to_have_count(2)
    shot(page, "run-timeline")
    assert csp_errors == []


def test_yaml_errors_and_form_errors_show_next_to_their_fields(page: Page, server: WebServer) -> None:
    log_in(page)
    page.goto("/workflows/new?view=form")
    page.locator("#nodes-0-command").fill("echo hi")
    page.locator("#nodes-0-retries").fill("-1")
    page.locator("#nodes-0-image").click()
    expect(page.locator("#err-nodes-0-retries")).to_contain_text("at least 0")
    expect(page.locator("#preview-step1")).to_have_class("node has-error")
    page.locator("#tab-yaml").click()
    page.locator("#spec").fill("name: x\nnodes: [")
    page.locator("#tab-form").click()
    expect(page.locator("#spec-error")).to_contain_text("invalid YAML")
    expect(page.locator("#spec")).to_be_visible()  # stays in the YAML tab
