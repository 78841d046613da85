"""The seed's page flows (issue 14) through the in-process app: the runs page's "create run" (workflow →
version → params), a version's "run" preselected, a run's copy filled with its params; the workflow list's
version rows; the run page's legend and stop confirmation."""

from __future__ import annotations

import re
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest

from aihub.db.models import Category, Module, ModuleBuild, NodeRun, Run, User, WorkflowVersion
from aihub.services.admin import create_cluster
from aihub.services.versions import set_workflow_shared
from aihub.services.workflows import create_version, create_workflow
from tests.engine.support import wait_for_run
from tests.web.webapp import HASH_FILE_FORM, Client, Web, make_repo, wait_built

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

    await create_workflow(
        await User.get(username="alice"), SPEC.format(default="1").replace("three-versions", "other-flow")
    )
    searched = await alice.get("/runs/new?wq=other")
    assert [text for _, text, _ in options(searched.text, "pick-workflow")] == [
        "— choose a workflow —",
        "other-flow",
    ]
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
    await create_workflow(
        await User.get(username="alice"), SPEC.format(default="1").replace("three-versions", "another")
    )
    page = await alice.get(f"/versions/{versions[0].id}/run")  # every workflow offered, this one chosen
    listed = options(page.text, "pick-workflow")
    assert {text for _, text, _ in listed} == {"three-versions", "another"}
    assert [text for _, text, selected in listed if selected] == ["three-versions"]
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


# ------------------------------------------------------------------------------------------------ run page honesty

SIX = ["WAITING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED", "SKIPPED"]


async def finished_run(web: Web, client: Client, spec: str, name: str) -> int:
    version = await create_workflow(await User.get(username="alice"), spec)
    response = await client.post(f"/versions/{version.id}/run", {"name": name})
    run_id = int(response.headers["location"].rsplit("/", 1)[1])
    await wait_for_run(web.rt, run_id)
    return run_id


async def test_a_finished_runs_page_has_the_legend_its_attempts_and_no_outputs(web: Web) -> None:
    alice = await web.client("alice")
    spec = "name: two-tries\nnodes:\n  - name: only\n    retries: 1\n    command: test -e $AIHUB_MARK || { touch $AIHUB_MARK; exit 3; }\n"
    shared = Path(tempfile.mkdtemp(prefix="aihub-flows-", dir="/var/tmp"))  # nodes get a private /tmp
    shared.chmod(0o777)
    mark = shared / "mark"
    spec = spec.replace("$AIHUB_MARK", str(mark))
    run_id = await finished_run(web, alice, spec, "tries")
    page = (await alice.get(f"/runs/{run_id}")).text
    legend = page[page.index('id="status-legend"') :]
    legend = legend[: legend.index("</p>")]
    assert re.findall(r'data-status="(\w+)"', legend) == SIX
    timeline = page[page.index('<section id="timeline"') :]
    assert re.findall(r'id="bar-only-(\d)" data-status="(\w+)"', timeline) == [
        ("1", "FAILED"),
        ("2", "SUCCEEDED"),
    ]
    assert "No attempt has started yet" not in page
    shutil.rmtree(shared, ignore_errors=True)
    io = (await alice.get(f"/runs/{run_id}/nodes/only?tab=io", htmx=True)).text
    assert re.search(r'id="no-outputs">no outputs<', io) and "none yet" not in io


async def test_the_live_stream_refreshes_the_timeline_right_after_its_snapshot(web: Web) -> None:
    """A run that ended before the page's stream opened: the snapshot asks the timeline to refetch itself
    (it used to say "No attempt has started yet" until the 2 s fallback)."""
    from aihub.web.live import _changes, run_context

    alice_user = await User.get(username="alice")
    alice = await web.client("alice")
    run_id = await finished_run(
        web, alice, "name: quick\nnodes:\n  - name: only\n    command: echo hi\n", "q"
    )
    stream = _changes(web.rt, alice_user, run_id, (await run_context(alice_user, run_id))["graph"], "csrf")
    events: list[str] = []
    try:
        while "synced" not in events:
            events += re.findall(r"^event: (\S+)$", await anext(stream), re.M)
    finally:
        await stream.aclose()
    assert events[-2:] == ["timeline", "synced"]


async def test_stop_asks_for_confirmation(web: Web) -> None:
    alice = await web.client("alice")
    version = await create_workflow(
        await User.get(username="alice"), "name: slow\nnodes:\n  - name: wait\n    command: sleep 60\n"
    )
    response = await alice.post(f"/versions/{version.id}/run", {"name": "slow"})
    run_id = int(response.headers["location"].rsplit("/", 1)[1])
    page = (await alice.get(f"/runs/{run_id}")).text
    assert f'<a class="button danger" href="/runs/{run_id}/stop" id="stop-run">' in page
    listed = (await alice.get("/runs")).text
    assert f'href="/runs/{run_id}/stop"' in listed and f'action="/runs/{run_id}/stop"' not in listed
    confirm = await alice.get(f"/runs/{run_id}/stop")
    assert confirm.status_code == 200 and 'id="confirm-stop"' in confirm.text
    assert not (await Run.get(id=run_id)).status.is_terminal  # asking did not stop it
    carol = await web.client("carol")
    assert (await carol.get(f"/runs/{run_id}/stop")).status_code == 404
    stopped = await alice.post(f"/runs/{run_id}/stop")
    assert stopped.status_code == 303
    run = await wait_for_run(web.rt, run_id)
    assert run.status.value == "STOPPED"
    again = (await alice.get(f"/runs/{run_id}/stop")).text
    assert 'id="stop-nothing"' in again and 'id="confirm-stop"' not in again


async def test_a_gpu_cluster_node_fails_clearly_on_a_host_without_gpus(web: Web) -> None:
    admin = await User.get(username="admin")
    await create_cluster(admin, name="gpu-one", gpu=1, cpu_millis=1000, memory_mib=1024, capacity=1)
    await web.rt.engine.load_pools()
    alice = await web.client("alice")
    spec = (
        "name: wants-gpu\nnodes:\n  - name: train\n    task_type: compute\n    cluster: gpu-one\n"
        "    command: echo trained\n"
    )
    run_id = await finished_run(web, alice, spec, "gpu")
    node = await NodeRun.get(run_id=run_id, name="train")
    assert node.status.value == "FAILED" and node.exit_code is None
    assert not web.rt.logs.path(run_id, "train", 1).exists()  # its command never ran without the GPU
    assert "AIHUB_LOCAL_GPUS" in node.message and "1 GPU" in node.message
    details = (await alice.get(f"/runs/{run_id}/nodes/train?tab=details", htmx=True)).text
    assert "AIHUB_LOCAL_GPUS" in details


async def test_build_numbers_agree_between_the_module_page_and_the_build_log(
    web: Web, category: Category, tmp_path: Path
) -> None:
    alice = await web.client("alice")
    for name in ("first-module", "second-module"):  # the second module's build 1 has the id 2
        repo = make_repo(tmp_path / name)
        response = await alice.post(
            "/modules/new", {**HASH_FILE_FORM, "name": name, "git_url": repo.url, "op": "save"}
        )
        assert response.status_code == 303, response.text
        await wait_built(name, web)
    module = await Module.get(name="second-module")
    build = await ModuleBuild.get(module_id=module.id)
    assert build.id != build.number == 1
    page = (await alice.get(f"/modules/{module.id}")).text
    assert "Build 1" in page
    log = (await alice.get(f"/modules/{module.id}/builds/{build.id}/log")).text
    assert "Log of build 1" in log and "build 1 of module &#39;second-module&#39;" in log
    assert f"build {build.id} of module" not in log


def test_a_timeline_without_attempts_says_whether_the_run_has_ended() -> None:
    from types import SimpleNamespace

    from aihub.domain.status import RunStatus
    from aihub.services.status import utcnow
    from aihub.web.render import render_string
    from aihub.web.timeline import chart

    empty = chart([], utcnow())
    for status, text in (
        (RunStatus.SUCCEEDED, "No node ran an attempt in this run"),
        (RunStatus.RUNNING, "No attempt has started yet"),
    ):
        run = SimpleNamespace(id=1, status=status)
        html = render_string("partials/runs/timeline.html", run=run, timeline=empty, timeline_live=False)
        assert text in html, status


# ------------------------------------------------------------------------------------------------ list filters


async def test_runs_filter_by_workflow_owner_and_date(web: Web) -> None:
    alice_user, bob_user = await User.get(username="alice"), await User.get(username="bob")
    spec = "name: {name}\nnodes:\n  - name: only\n    command: echo hi\n"
    mine = await create_workflow(alice_user, spec.format(name="alpha-flow"))
    await set_workflow_shared(alice_user, mine.workflow.id, True)
    theirs = await create_workflow(bob_user, spec.format(name="beta-flow"))
    await set_workflow_shared(bob_user, theirs.workflow.id, True)
    alice, bob = await web.client("alice"), await web.client("bob")
    for client, version, name in ((alice, mine, "a-run"), (bob, theirs, "b-run")):
        response = await client.post(f"/versions/{version.id}/run", {"name": name})
        await wait_for_run(web.rt, int(response.headers["location"].rsplit("/", 1)[1]))

    def names(html: str) -> set[str]:
        return set(re.findall(r'<td><a href="/runs/\d+">([^<]+)</a></td>', html))

    assert names((await alice.get("/runs")).text) == {"a-run", "b-run"}  # team mates share workflows
    assert names((await alice.get("/runs?workflow=beta")).text) == {"b-run"}
    assert names((await alice.get("/runs?owner=alice")).text) == {"a-run"}
    today = (await Run.get(name="a-run")).created_at.date()
    assert names((await alice.get(f"/runs?from={today}&to={today}")).text) == {"a-run", "b-run"}
    assert names((await alice.get(f"/runs?from={today + timedelta(days=1)}")).text) == set()
    assert names((await alice.get(f"/runs?to={today - timedelta(days=1)}")).text) == set()
    bad = await alice.get("/runs?from=yesterday")
    assert bad.status_code == 400 and "from must be a date" in bad.text
    unknown = await alice.get("/runs?owner=nobody")
    assert unknown.status_code == 400 and "no user named" in unknown.text
    # the same filters through GraphQL
    from tests.web.test_module_states import gql

    query = """query($w: String, $o: String, $a: DateTime, $b: DateTime) {
      runs(workflowSearch: $w, owner: $o, createdAfter: $a, createdBefore: $b) { items { name } } }"""

    async def api(**variables: object) -> set[str]:
        data = await gql(web, "alice", query, **variables)
        return {r["name"] for r in data["runs"]["items"]}

    assert await api(w="beta") == {"b-run"} and await api(o="alice") == {"a-run"}
    assert await api(a=f"{today}T00:00:00Z", b=f"{today + timedelta(days=1)}T00:00:00Z") == {"a-run", "b-run"}
    assert await api(a=f"{today + timedelta(days=1)}T00:00:00") == set()


async def test_the_runs_and_workflow_pages_keep_their_filters_across_pages(web: Web) -> None:
    alice_user = await User.get(username="alice")
    for i in range(55):
        await create_workflow(alice_user, SPEC.format(default="1").replace("three-versions", f"kept-{i:02d}"))
    await create_workflow(await User.get(username="bob"), SPEC.format(default="1"))  # another owner
    admin = await web.client("admin")
    html = (await admin.get("/workflows?owner=alice&q=kept")).text
    next_url = re.search(r'<a href="([^"]+)" rel="next"', html)
    assert next_url and "owner=alice" in next_url.group(1) and "q=kept" in next_url.group(1)
    rest = (await admin.get(next_url.group(1).replace("&amp;", "&"))).text
    seen = re.findall(r'class="workflow-link"><strong>([^<]+)</strong>', html + rest)
    assert sorted(seen) == [f"kept-{i:02d}" for i in range(55)]
    assert "three-versions" not in (await admin.get("/workflows?owner=alice")).text


async def test_reviews_are_paged_and_searchable(
    web: Web, category: Category, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aihub.db.models import BuildStatus, ModuleReview
    from aihub.web import paging

    monkeypatch.setattr(paging, "PAGE_SIZE", 3)
    alice_user = await User.get(username="alice")
    for i in range(7):
        module = await Module.create(
            name=f"rev-{i}", category=category, owner=alice_user, git_url="file:///x", description=""
        )
        build = await ModuleBuild.create(module=module, number=1, status=BuildStatus.BUILT, snapshot={})
        await ModuleReview.create(module=module, build=build, requester=alice_user)
    admin = await web.client("admin")
    seen: list[str] = []
    url: str | None = "/reviews"
    while url:
        html = (await admin.get(url)).text
        seen += re.findall(r'<tr class="review-row" id="review-(\d+)"', html)
        found = re.search(r'<a href="([^"]+)" rel="next"', html)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert len(seen) == len(set(seen)) == 7
    searched = (await admin.get("/reviews?q=rev-3")).text
    assert len(re.findall(r'<tr class="review-row"', searched)) == 1


async def test_admin_users_filter_and_many_teams_are_typed(web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    from aihub.db.models import Team
    from aihub.web import admin as admin_pages

    admin = await web.client("admin")
    only_bob = (await admin.get("/admin/users?q=bo")).text
    assert re.findall(r'<tr id="user-(\w+)"', only_bob) == ["bob"]
    ml = (await admin.get("/admin/users?team=ml")).text
    assert re.findall(r'<tr id="user-(\w+)"', ml) == ["alice", "bob"]
    assert '<option value="' in ml  # few teams: chosen from a list
    monkeypatch.setattr(admin_pages, "TEAM_SELECT_MAX", 1)
    many = (await admin.get("/admin/users")).text
    carol = await User.get(username="carol")
    assert f'id="u{carol.id}-team_id" name="team_name" value="other"' in many
    moved = await admin.post(f"/admin/users/{carol.id}", {"team_name": "ml", "is_active": "on"})
    assert moved.status_code == 303
    assert (await User.get(id=carol.id)).team_id == (await Team.get(name="ml")).id  # type: ignore[attr-defined]
    wrong = await admin.post(f"/admin/users/{carol.id}", {"team_name": "nope", "is_active": "on"})
    assert wrong.status_code == 400 and "unknown team" in wrong.text
    teams = (await admin.get("/admin/teams?q=oth")).text
    assert "other" in teams and ">ml<" not in teams


async def test_modules_filter_by_owner_and_reviews_by_requester(web: Web, category: Category) -> None:
    from aihub.db.models import BuildStatus, ModuleReview

    for owner in ("alice", "carol"):
        user = await User.get(username=owner)
        module = await Module.create(
            name=f"{owner}-mod", category=category, owner=user, git_url="file:///x", description=""
        )
        build = await ModuleBuild.create(module=module, number=1, status=BuildStatus.BUILT, snapshot={})
        await ModuleReview.create(module=module, build=build, requester=user)
    admin = await web.client("admin")
    modules = (await admin.get("/modules?owner=carol")).text
    assert re.findall(r'id="module-row-([\w-]+)"', modules) == ["carol-mod"]
    reviews = (await admin.get("/reviews?requester=alice")).text
    assert len(re.findall(r'<tr class="review-row"', reviews)) == 1 and "alice-mod" in reviews
