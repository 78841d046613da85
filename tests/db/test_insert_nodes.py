"""``aihub.db.node_writes.insert_nodes``: a new run's node rows written in one statement are the rows
``NodeRun.bulk_create`` wrote, on SQLite and PostgreSQL, and a bad name writes none of them."""

from __future__ import annotations

import pytest
from tortoise.exceptions import ValidationError
from tortoise.transactions import in_transaction

from aihub.bus.memory import MemoryBus
from aihub.db.models import NodeRun, Run
from aihub.db.node_writes import insert_nodes
from aihub.services.runs import create_run
from aihub.services.users import create_user
from aihub.services.workflows import create_workflow
from aihub.settings import Settings

NAMES = ["prep", "train", "eval", "n" * 64]
SPEC = {
    "name": "wf",
    "nodes": [
        {"name": name, "command": "true", "depends_on": NAMES[:i][-1:]} for i, name in enumerate(NAMES)
    ],
}
#: every column but the row's own id and its run
COLUMNS = [c for c in NodeRun._meta.fields_db_projection if c not in ("id", "run_id")]


async def _rows(run_id: int) -> list[tuple[object, ...]]:
    return [tuple(r) for r in await NodeRun.filter(run_id=run_id).order_by("id").values_list(*COLUMNS)]


@pytest.fixture
async def version_and_user(db: Settings) -> tuple[int, object]:
    user = await create_user("alice", "alice-password-1")
    return (await create_workflow(user, SPEC)).id, user


async def _other_run(like: Run) -> Run:
    return await Run.create(
        name="other",
        version_id=like.version_id,
        workflow_id=like.workflow_id,
        owner_id=like.owner_id,
        params={},
    )  # type: ignore[attr-defined]


async def test_a_new_run_s_node_rows_are_the_ones_bulk_create_wrote(version_and_user: tuple) -> None:
    version_id, user = version_and_user
    run = await create_run(MemoryBus(), user, version_id)  # insert_nodes
    other = await _other_run(run)
    await NodeRun.bulk_create([NodeRun(run_id=other.id, name=name) for name in NAMES])
    rows = await _rows(run.id)
    assert [r[COLUMNS.index("name")] for r in rows] == NAMES
    assert rows == await _rows(other.id)
    assert rows[0][COLUMNS.index("status")] == "WAITING"


async def test_a_name_too_long_is_refused_and_no_row_is_written(version_and_user: tuple) -> None:
    version_id, user = version_and_user
    run = await _other_run(await create_run(MemoryBus(), user, version_id))
    with pytest.raises(ValidationError, match="name"):
        async with in_transaction():
            await insert_nodes(run.id, ["fine", "x" * 65])
    assert await NodeRun.filter(run_id=run.id).count() == 0


async def test_no_names_no_rows(version_and_user: tuple) -> None:
    version_id, user = version_and_user
    run = await _other_run(await create_run(MemoryBus(), user, version_id))
    await insert_nodes(run.id, [])
    assert await NodeRun.filter(run_id=run.id).count() == 0
