"""The seed's page flows (issue 14) through the in-process app: the runs page's "create run" (workflow →
version → params), a version's "run" preselected, a run's copy filled with its params; the workflow list's
version rows; the run page's legend and stop confirmation."""

from __future__ import annotations

import re

from aihub.db.models import Run, User, WorkflowVersion
from aihub.services.versions import set_workflow_shared
from aihub.services.workflows import create_version, create_workflow
from tests.engine.support import wait_for_run
from tests.web.webapp import Web

SPEC = """
name: three-versions
params:
  - {{name: size, description: how many rows, default: "{default}"}}
  - {{name: label, description: what to call it}}
nodes:
  - name: only
    command: echo $size $label
    inputs:
      - {{name: size, from: params.size}}
      - {{name: label, from: params.label}}
"""


async def three_versions(owner: str = "alice") -> list[WorkflowVersion]:
    user = await User.get(username=owner)
    first = await create_workflow(user, SPEC.format(default="10"))
    second = await create_version(user, first.workflow.id, SPEC.format(default="20"), description="bigger")
    third = await create_version(user, first.workflow.id, SPEC.format(default="30"))
    return [first, second, third]


def options(html: str, select_id: str) -> list[tuple[str, str, bool]]:
    block = re.search(rf'<select name="\w+" id="{select_id}">(.*?)</select>', html, re.S)
    assert block, html
    return [
        (value, text.strip(), bool(selected))
        for value, selected, text in re.findall(r'<option value="(\d*)"( selected)?>([^<]*)', block.group(1))
    ]


async def test_create_run_picks_workflow_then_version_then_params(web: Web) -> None:
    versions = await three_versions()
    alice = await web.client("alice")
    runs = await alice.get("/runs")
    assert 'href="/runs/new"' in runs.text
    start = await alice.get("/runs/new")
    assert start.status_code == 200
    assert options(start.text, "pick-workflow")[1][1] == "three-versions"
    assert 'id="run-form"' not in start.text  # no version chosen yet: no params

    picked = await alice.get(f"/runs/new?workflow={versions[0].workflow.id}", htmx=True)
    assert picked.text.startswith('<div id="run-create">')  # the fragment htmx swaps in
    listed = options(picked.text, "pick-version")
    assert [text.split(" ")[0] for _, text, _ in listed] == ["v3", "v2", "v1"]  # newest first
    assert "alice" in listed[1][1] and "bigger" in listed[1][1]
    assert listed[0][2]  # the newest is preselected
    assert 'value="30"' in picked.text and "how many rows" in picked.text

    second = await alice.get(f"/runs/new?workflow={versions[0].workflow.id}&version={versions[1].id}")
    assert [sel for _, _, sel in options(second.text, "pick-version")] == [False, True, False]
    assert f'action="/versions/{versions[1].id}/run"' in second.text and 'value="20"' in second.text

    made = await alice.post(
        f"/versions/{versions[1].id}/run", {"name": "picked", "param.size": "25", "param.label": "x"}
    )
    assert made.status_code == 303
    run = await Run.get(name="picked")
    assert run.version_id == versions[1].id and run.params == {"size": "25", "label": "x"}  # type: ignore[attr-defined]
    assert made.headers["location"] == f"/runs/{run.id}"
    await wait_for_run(web.rt, run.id)


async def test_a_versions_run_is_the_same_page_preselected_and_copy_is_filled(web: Web) -> None:
    versions = await three_versions()
    alice = await web.client("alice")
    page = await alice.get(f"/versions/{versions[0].id}/run")
    assert 'id="run-picker"' in page.text
    assert [sel for _, _, sel in options(page.text, "pick-version")] == [False, False, True]
    await alice.post(
        f"/versions/{versions[0].id}/run", {"name": "first", "param.size": "10", "param.label": "old"}
    )
    run = await Run.get(name="first")
    await wait_for_run(web.rt, run.id)
    copy = await alice.get(f"/runs/{run.id}/copy")
    assert copy.status_code == 303
    filled = await alice.get(copy.headers["location"])
    assert (
        'value="old"' in filled.text and 'value="10"' in filled.text and 'value="first-copy"' in filled.text
    )
    assert 'id="run-picker"' not in filled.text  # a copy keeps the run's version


async def test_create_run_errors_name_the_field(web: Web) -> None:
    versions = await three_versions()
    alice = await web.client("alice")
    missing = await alice.post(f"/versions/{versions[2].id}/run", {"name": "no-label"})
    assert missing.status_code == 400 and 'id="params-error"' in missing.text and "label" in missing.text
    unknown = await alice.get("/runs/new?workflow=999999")
    assert unknown.status_code == 404 and "workflow" in unknown.text
    carol = await web.client("carol")  # another team: alice's workflow is not hers to see
    hidden = await carol.get(f"/runs/new?workflow={versions[0].workflow.id}")
    assert hidden.status_code == 404


async def test_workflow_rows_expand_to_every_version_with_its_actions(web: Web) -> None:
    versions = await three_versions()
    wf = versions[0].workflow
    alice = await web.client("alice")
    listed = (await alice.get("/workflows")).text
    assert f'<a href="/workflows/{wf.id}" class="workflow-link">' in listed
    rows = re.findall(r'<tr class="version-row" id="version-row-(\d+)">', listed)
    assert rows == [str(v.id) for v in reversed(versions)]  # newest first, all of them
    for v in versions:
        for href in ("/run", "/copy", "/copy?as=workflow", "", "/export.yaml"):
            assert f'href="/versions/{v.id}{href}"' in listed, (v.number, href)
    page = await alice.get(f"/workflows/{wf.id}")
    assert page.status_code == 200
    assert re.findall(r'id="version-row-(\d+)"', page.text) == [str(v.id) for v in reversed(versions)]

    await set_workflow_shared(await User.get(username="alice"), wf.id, True)
    bob = await web.client("bob")  # a team mate who does not own it: no "copy as a new version"
    others = (await bob.get("/workflows")).text
    assert f'id="version-row-{versions[0].id}"' in others
    assert f'href="/versions/{versions[0].id}/copy"' not in others
    assert f'href="/versions/{versions[0].id}/copy?as=workflow"' in others
    carol = await web.client("carol")
    assert (await carol.get(f"/workflows/{wf.id}")).status_code == 404


async def test_copy_as_a_new_workflow_starts_the_editor_on_a_new_workflow(web: Web) -> None:
    versions = await three_versions()
    alice = await web.client("alice")
    as_version = (await alice.get(f"/versions/{versions[0].id}/copy")).text
    assert re.search(r'id="target-version" name="target" value="version" checked', as_version)
    as_workflow = (await alice.get(f"/versions/{versions[0].id}/copy?as=workflow")).text
    assert re.search(r'id="target-workflow" name="target" value="workflow" checked', as_workflow)
    assert 'value="three-versions-copy"' in as_workflow


async def test_the_workflow_list_is_searchable_and_paged(web: Web) -> None:
    alice_user = await User.get(username="alice")
    for i in range(55):
        await create_workflow(alice_user, SPEC.format(default="1").replace("three-versions", f"wf-{i:02d}"))
    alice = await web.client("alice")
    seen: list[str] = []
    url: str | None = "/workflows"
    while url:
        html = (await alice.get(url)).text
        seen += re.findall(r'class="workflow-link"><strong>([^<]+)</strong>', html)
        found = re.search(r'<a href="([^"]+)" rel="next"', html)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert sorted(seen) == [f"wf-{i:02d}" for i in range(55)]
    searched = (await alice.get("/workflows?q=wf-1")).text
    assert re.findall(r'class="workflow-link"><strong>([^<]+)</strong>', searched) == [
        f"wf-{i}" for i in range(19, 9, -1)
    ]
