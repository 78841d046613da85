"""The model layer on a migrated database, on SQLite and PostgreSQL: relations, constraints, JSON, cascades."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from tortoise.connection import get_connection
from tortoise.exceptions import IntegrityError

from aihub.db.models import (
    ApiToken,
    Attempt,
    BuildStatus,
    Category,
    DataStorage,
    Module,
    ModuleBuild,
    ModuleReview,
    ModuleStatus,
    NodeEvent,
    NodeRun,
    ReviewStatus,
    Run,
    Team,
    TokenKind,
    User,
    VirtualCluster,
    Workflow,
    WorkflowVersion,
)
from aihub.domain.status import NodeStatus, RunStatus

pytestmark = pytest.mark.usefixtures("db")

SPEC = {
    "name": "pass-params-demo",
    "description": "参数传递示例 — ünïcødé ✓ 🚀",
    "params": [{"name": "greeting", "default": '你好\n"quoted" \\ back'}],
    "nodes": [
        {
            "name": "step1",
            "command": "echo $greeting > /tmp/out.txt",
            "outputs": [{"name": "out", "path": "/tmp/out.txt", "type": "text"}],
            "env": {"EPOCHS": "3", "nested": {"deep": [1, 2.5, None, True, {"x": []}]}},
        }
    ],
}


async def _graph() -> dict[str, object]:
    """One of every entity, linked the way the product links them."""
    team = await Team.create(name="vision")
    owner = await User.create(username="alice", team=team, is_team_leader=True)
    workflow = await Workflow.create(name="demo", owner=owner)
    version = await WorkflowVersion.create(workflow=workflow, number=1, spec=SPEC, created_by=owner)
    run = await Run.create(
        name="demo-1", version=version, workflow=workflow, owner=owner, params={"greeting": "hi"}
    )
    node = await NodeRun.create(run=run, name="step1", inputs={"greeting": "hi"})
    attempt = await Attempt.create(node_run=node, number=1, handle={"pid": 42, "host": "h"})
    event = await NodeEvent.create(run=run, node="step1", attempt=1, kind="started")
    token = await ApiToken.create(user=owner, kind=TokenKind.RUN, token_hash="a" * 64, run=run)
    return {
        "team": team,
        "owner": owner,
        "workflow": workflow,
        "version": version,
        "run": run,
        "node": node,
        "attempt": attempt,
        "event": event,
        "token": token,
    }


async def test_every_entity_and_its_relations_round_trip() -> None:
    g = await _graph()
    category = await Category.create(name="training", description="训练")
    cluster = await VirtualCluster.create(name="rtx2080x8", gpu=1, cpu_millis=10000, memory_mib=81920)
    storage = await DataStorage.create(
        name="hw-data", path="/data/hw", volume={"nfs": {"server": "n", "path": "/x"}}
    )
    reviewer = await User.create(username="bob", is_admin=True)
    module = await Module.create(
        name="image-classifier-train", category=category, owner=g["owner"], git_url="file:///r"
    )
    build = await ModuleBuild.create(module=module, number=1, entrypoint=["python", "train.py"])
    review = await ModuleReview.create(module=module, build=build, requester=g["owner"], reviewer=reviewer)

    run = await Run.get(id=g["run"].id).prefetch_related(
        "version__workflow__owner__team", "nodes__attempts", "events"
    )
    assert run.version.workflow.owner.team.name == "vision"
    assert run.version.workflow.owner.is_team_leader
    assert [n.name for n in run.nodes] == ["step1"]
    assert run.nodes[0].attempts[0].handle == {"pid": 42, "host": "h"}
    assert [(e.node, e.kind) for e in run.events] == [("step1", "started")]
    assert await ApiToken.filter(run=run, user=g["owner"]).count() == 1

    team = await Team.get(name="vision").prefetch_related("members")
    assert [m.username for m in team.members] == ["alice"]

    review = await ModuleReview.get(id=review.id).prefetch_related(
        "module__category", "build", "requester", "reviewer"
    )
    assert (review.module.category.name, review.build.number) == ("training", 1)
    assert (review.requester.username, review.reviewer.username) == ("alice", "bob")
    assert (await ModuleBuild.get(id=build.id)).entrypoint == ["python", "train.py"]
    assert (await VirtualCluster.get(id=cluster.id)).memory_mib == 81920
    assert (await DataStorage.get(id=storage.id)).volume == {"nfs": {"server": "n", "path": "/x"}}


async def test_defaults_and_timestamps() -> None:
    g = await _graph()
    run = await Run.get(id=g["run"].id)
    assert (run.status, run.retry_count, run.use_cache, run.message) == (RunStatus.PENDING, 0, True, "")
    assert run.started_at is None and run.finished_at is None
    assert run.created_at.tzinfo is not None
    assert abs((datetime.now(UTC) - run.created_at).total_seconds()) < 60
    node = await NodeRun.get(id=g["node"].id)
    assert (node.status, node.attempt, node.outputs) == (NodeStatus.WAITING, 0, {})


async def test_json_round_trips_unicode_and_nesting() -> None:
    g = await _graph()
    version = await WorkflowVersion.get(id=g["version"].id)
    assert version.spec == SPEC
    params = {"路径": "/数据/ß", "nested": {"list": [1, {"a": None}], "emoji": "🙂"}, "empty": {}}
    await Run.filter(id=g["run"].id).update(params=params)
    assert (await Run.get(id=g["run"].id)).params == params
    module_inputs = [{"name": "dataset", "description": "数据集"}]
    category = await Category.create(name="c")
    module = await Module.create(
        name="m", category=category, owner=g["owner"], git_url="u", inputs=module_inputs
    )
    assert (await Module.get(id=module.id)).inputs == module_inputs


@pytest.mark.parametrize(
    "duplicate",
    [
        "username",
        "workflow name per owner",
        "version number per workflow",
        "node name per run",
        "attempt number",
    ],
)
async def test_unique_constraints(duplicate: str) -> None:
    g = await _graph()
    create = {
        "username": lambda: User.create(username="alice"),
        "workflow name per owner": lambda: Workflow.create(name="demo", owner=g["owner"]),
        "version number per workflow": lambda: WorkflowVersion.create(
            workflow=g["workflow"], number=1, spec={}, created_by=g["owner"]
        ),
        "node name per run": lambda: NodeRun.create(run=g["run"], name="step1"),
        "attempt number": lambda: Attempt.create(node_run=g["node"], number=1),
    }[duplicate]
    with pytest.raises(IntegrityError):
        await create()


async def test_unique_scopes_allow_the_same_name_elsewhere() -> None:
    g = await _graph()
    other = await User.create(username="carol")
    await Workflow.create(name="demo", owner=other)
    other_workflow = await Workflow.create(name="other", owner=g["owner"])
    await WorkflowVersion.create(workflow=other_workflow, number=1, spec={}, created_by=g["owner"])
    other_run = await Run.create(name="r2", version=g["version"], workflow=g["workflow"], owner=g["owner"])
    await NodeRun.create(run=other_run, name="step1")
    assert await Workflow.filter(name="demo").count() == 2
    assert await NodeRun.filter(name="step1").count() == 2


async def test_deleting_a_workflow_removes_everything_under_it() -> None:
    g = await _graph()
    other_owner_run = await Run.create(
        name="kept",
        version=await _other_version(),
        workflow=await Workflow.get(name="other"),
        owner=g["owner"],
    )
    await g["workflow"].delete()
    assert await Workflow.filter(id=g["workflow"].id).count() == 0
    assert await WorkflowVersion.filter(workflow_id=g["workflow"].id).count() == 0
    assert await Run.filter(workflow_id=g["workflow"].id).count() == 0
    assert await NodeRun.filter(run_id=g["run"].id).count() == 0
    assert await Attempt.filter(node_run_id=g["node"].id).count() == 0
    assert await NodeEvent.filter(run_id=g["run"].id).count() == 0
    assert await ApiToken.filter(run_id=g["run"].id).count() == 0
    assert await User.filter(id=g["owner"].id).exists()
    assert await Run.filter(id=other_owner_run.id).exists()


async def _other_version() -> WorkflowVersion:
    owner = await User.get(username="alice")
    workflow = await Workflow.create(name="other", owner=owner)
    return await WorkflowVersion.create(workflow=workflow, number=1, spec={}, created_by=owner)


async def test_deleting_a_team_keeps_its_members() -> None:
    g = await _graph()
    await g["team"].delete()
    owner = await User.get(id=g["owner"].id)
    assert owner.team_id is None


async def test_a_category_in_use_cannot_be_deleted() -> None:
    g = await _graph()
    category = await Category.create(name="in-use")
    await Module.create(name="m", category=category, owner=g["owner"], git_url="u")
    with pytest.raises(IntegrityError):
        await category.delete()


async def test_enum_fields_store_their_values() -> None:
    g = await _graph()
    await Run.filter(id=g["run"].id).update(status=RunStatus.RUNNING)
    await NodeRun.filter(id=g["node"].id).update(status=NodeStatus.SUCCEEDED)
    category = await Category.create(name="c")
    module = await Module.create(
        name="m", category=category, owner=g["owner"], git_url="u", status=ModuleStatus.BUILT
    )
    build = await ModuleBuild.create(module=module, number=1, status=BuildStatus.BUILD_FAILED)
    await ModuleReview.create(module=module, build=build, requester=g["owner"], status=ReviewStatus.APPROVED)

    run = await Run.get(id=g["run"].id)
    assert run.status is RunStatus.RUNNING
    assert await Run.filter(status=RunStatus.RUNNING).count() == 1
    assert (await NodeRun.get(id=g["node"].id)).status is NodeStatus.SUCCEEDED
    assert (await Module.get(id=module.id)).status is ModuleStatus.BUILT
    assert (await ModuleBuild.get(id=build.id)).status is BuildStatus.BUILD_FAILED
    assert (await ModuleReview.get(module=module)).status is ReviewStatus.APPROVED
    assert (await ApiToken.get(id=g["token"].id)).kind is TokenKind.RUN
    rows = await get_connection("default").execute_query_dict('SELECT "status" FROM "run"')
    assert rows == [{"status": "RUNNING"}]


async def test_enum_fields_reject_unknown_values() -> None:
    g = await _graph()
    with pytest.raises(ValueError, match="BOGUS"):
        await Run.create(
            name="x", version=g["version"], workflow=g["workflow"], owner=g["owner"], status="BOGUS"
        )


async def test_run_list_indexes_exist(introspect) -> None:
    schema = await introspect(get_connection("default"))
    run_indexes = {columns for _name, columns, _unique, _condition in schema["run"]["indexes"]}
    assert {
        ("status", "created_at"),
        ("owner_id", "created_at"),
        ("workflow_id", "created_at"),
    } <= run_indexes
