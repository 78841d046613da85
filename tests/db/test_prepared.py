"""``PreparedSelect`` (SQL made once per dialect and shape) answers what the query builder answers: ``get_run``
through it against ``runs_visible_to(user).get_or_none`` for every caller kind and run, on SQLite and
PostgreSQL (there read on the reader connections of ``aihub.db.pg_reads``); a select that would need related
models is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aihub.bus.memory import MemoryBus
from aihub.db.models import Run, Workflow
from aihub.db.pg import ResilientAsyncpgClient
from aihub.db.prepared import PreparedSelect
from aihub.services.access import get_run, runs_visible_to
from aihub.services.errors import NotFound
from aihub.services.runs import create_run
from aihub.services.users import create_user
from aihub.services.workflows import create_workflow
from aihub.settings import Settings

SPEC = {"name": "w", "nodes": [{"name": "a", "command": "true"}]}


async def test_get_run_sees_what_the_query_builder_sees(db: Settings) -> None:
    admin = await create_user("root", "pw-123456789", is_admin=True)
    alice = await create_user("alice", "pw-123456789", team="ml")
    bob = await create_user("bob", "pw-123456789", team="ml")
    carol = await create_user("carol", "pw-123456789")
    bus = MemoryBus()
    runs = []
    for owner, shared in ((alice, False), (alice, True), (bob, False), (carol, False)):
        version = await create_workflow(owner, {**SPEC, "name": f"w-{owner.username}-{str(shared).lower()}"})
        await Workflow.filter(id=version.workflow_id).update(shared_with_team=shared)  # type: ignore[attr-defined]
        runs.append(await create_run(bus, owner, version.id))
    await Run.filter(id=runs[0].id).update(started_at=datetime(2026, 12, 5, 10, 30, 1, 123456, tzinfo=UTC))
    seen = 0
    before = reader_reads()
    for user in (admin, alice, bob, carol):
        for run_id in [r.id for r in runs] + [10_000]:
            expected = await runs_visible_to(user).get_or_none(id=run_id)
            try:
                got: Run | None = await get_run(user, run_id)
            except NotFound:
                got = None
            fields = ("id", "name", "status", "created_at", "started_at", "finished_at", "params", "message")
            assert (got and [getattr(got, f) for f in fields]) == (
                expected and [getattr(expected, f) for f in fields]
            ), (user.username, run_id)
            if got is not None and expected is not None:  # timestamps parsed once (cached): the same zone
                assert got.created_at.tzinfo == expected.created_at.tzinfo
                assert str(got.created_at) == str(expected.created_at)
            seen += got is not None
    assert seen == 4 + 2 + 2 + 1  # admin all; alice hers; bob his and alice's shared one; carol hers
    postgres = isinstance(Run._meta.db, ResilientAsyncpgClient)
    assert reader_reads() - before == (4 * 5 if postgres else 0)  # PostgreSQL: every shape on the readers


def reader_reads() -> int:
    """Reads answered by PostgreSQL's reader connections (``aihub.db.pg_reads``) so far."""
    db = Run._meta.db
    return db.readers.reads if isinstance(db, ResilientAsyncpgClient) and db.readers else 0


async def test_selects_with_related_models_are_refused(db: Settings) -> None:
    prepared = PreparedSelect(Run, lambda run_id: Run.filter(id=run_id).select_related("owner"))
    with pytest.raises(ValueError, match="plain selects only"):
        await prepared.fetch("with owner", {"run_id": 1})
