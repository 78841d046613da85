"""Read use cases: listings with filters and cursor pagination, run snapshots, module visibility.

Every listing starts from the caller's visibility (``aihub.services.access``), so a filter can only narrow what
the caller may see. Pages are keyset-paginated on the id (newest first): a cursor is an opaque string that
stays valid while rows are added, and a page costs one query whatever its position.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from tortoise.models import Model
from tortoise.queryset import QuerySet

from aihub.db.models import (
    Attempt,
    Module,
    ModuleReview,
    ModuleStatus,
    NodeEvent,
    NodeRun,
    Run,
    User,
    Workflow,
    WorkflowVersion,
)
from aihub.domain import dag
from aihub.domain.ids import parse_row_id
from aihub.domain.messages import msg
from aihub.domain.spec import parse_spec
from aihub.domain.status import NodeStatus, RunStatus, attempt_over
from aihub.services.access import get_run, runs_visible_to, workflows_visible_to
from aihub.services.errors import InvalidInput, NotFound
from aihub.services.modules import modules_visible_to  # visibility rules live with the module services
from aihub.services.reviews import reviews_visible_to

MAX_PAGE = 1000
DEFAULT_PAGE = 50

M = TypeVar("M", bound=Model)


@dataclass
class Page(Generic[M]):
    items: list[M]
    next_cursor: str | None


def encode_cursor(kind: str, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{row_id}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> int:
    """The row id a cursor of ``kind`` holds; anything else (another kind, not an id of ``aihub.domain.ids``)
    is ``INVALID_INPUT`` on ``after``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError:
        raw = ""
    prefix, _, value = raw.partition(":")
    row_id = parse_row_id(value) if prefix == kind else None
    if row_id is None:
        raise InvalidInput(
            msg("invalid cursor {cursor}: pass the nextCursor of a previous page", cursor=repr(cursor)),
            field="after",
        )
    return row_id


async def _page(query: QuerySet[M], kind: str, first: int, after: str | None) -> Page[M]:
    if not 1 <= first <= MAX_PAGE:
        raise InvalidInput(
            msg("first must be between 1 and {maximum} (got {value})", maximum=MAX_PAGE, value=first),
            field="first",
        )
    if after is not None:
        query = query.filter(id__lt=decode_cursor(kind, after))
    rows = await query.order_by("-id").limit(first + 1)
    more = len(rows) > first
    rows = rows[:first]
    return Page(rows, encode_cursor(kind, rows[-1].pk) if more and rows else None)


async def _user_id(username: str, field: str) -> int:
    user = await User.get_or_none(username=username)
    if user is None:
        raise InvalidInput(msg("no user named {name}", name=repr(username)), field=field)
    return user.id


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def list_runs(
    user: User,
    *,
    statuses: Sequence[RunStatus] = (),
    workflow_id: int | None = None,
    owner: str | None = None,
    workflow_search: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    first: int = DEFAULT_PAGE,
    after: str | None = None,
) -> Page[Run]:
    """Runs the caller may see, newest first, filtered by status, workflow (id, or a part of its name), owner's
    username and creation time (``created_after`` <= created_at < ``created_before``)."""
    query = runs_visible_to(user)
    if statuses:
        query = query.filter(status__in=list(statuses))
    if workflow_id is not None:
        query = query.filter(workflow_id=workflow_id)
    if workflow_search:
        query = query.filter(workflow__name__icontains=workflow_search)
    if created_after is not None:  # a time without a zone is UTC
        query = query.filter(created_at__gte=_utc(created_after))
    if created_before is not None:
        query = query.filter(created_at__lt=_utc(created_before))
    if owner:
        query = query.filter(owner_id=await _user_id(owner, "owner"))
    return await _page(query, "run", first, after)


async def list_workflows(
    user: User,
    *,
    search: str | None = None,
    owner: str | None = None,
    first: int = DEFAULT_PAGE,
    after: str | None = None,
) -> Page[Workflow]:
    query = workflows_visible_to(user)
    if search:
        query = query.filter(name__icontains=search)
    if owner:
        query = query.filter(owner_id=await _user_id(owner, "owner"))
    return await _page(query, "workflow", first, after)


async def list_versions(user: User, workflow_id: int) -> list[WorkflowVersion]:
    if not await workflows_visible_to(user).filter(id=workflow_id).exists():
        raise NotFound(msg("workflow {workflow} not found", workflow=workflow_id), field="workflowId")
    return await WorkflowVersion.filter(workflow_id=workflow_id).order_by("number")


async def versions_of(workflows: Sequence[Workflow]) -> list[list[WorkflowVersion]]:
    """Each listed workflow's versions, newest first, with their authors: one query for the whole page."""
    rows = await WorkflowVersion.filter(workflow_id__in=[w.id for w in workflows]).order_by("-number")
    await WorkflowVersion.fetch_for_list(rows, "created_by")
    by_workflow: dict[int, list[WorkflowVersion]] = {w.id: [] for w in workflows}
    for row in rows:
        by_workflow[row.workflow_id].append(row)  # type: ignore[attr-defined]
    return [by_workflow[w.id] for w in workflows]


async def run_nodes_in_order(run: Run, version: WorkflowVersion | None = None) -> list[NodeRun]:
    """The run's nodes, parents first (declaration order among nodes ready together)."""
    version = version or await WorkflowVersion.get(id=run.version_id)  # type: ignore[attr-defined]
    nodes = {n.name: n for n in await NodeRun.filter(run_id=run.id)}
    order = dag.topological_order(parse_spec(version.spec).parents())
    return [nodes[name] for name in order if name in nodes]


async def run_nodes(run: Run, status: NodeStatus | None = None) -> dict[str, NodeRun]:
    """The node rows of a run the caller was allowed to see, by name (only those in ``status`` if given)."""
    query = NodeRun.filter(run_id=run.id)
    if status is not None:
        query = query.filter(status=status)
    return {n.name: n for n in await query}


async def load_related(rows: Sequence[Model], *related: str) -> None:
    """Fetch the ``related`` rows of every row of a listing in one query each (not one per row)."""
    if rows:
        await type(rows[0]).fetch_for_list(list(rows), *related)


async def run_snapshot(user: User, run_id: int) -> tuple[Run, list[NodeRun]]:
    """A consistent picture of a run for live views: the run row and its nodes in topological order."""
    run = await get_run(user, run_id)
    return run, await run_nodes_in_order(run)


async def get_node(user: User, run_id: int, node: str) -> tuple[Run, NodeRun]:
    run = await get_run(user, run_id)
    row = await NodeRun.get_or_none(run_id=run.id, name=node)
    if row is None:
        raise NotFound(msg("run {run} has no node {node}", run=run_id, node=repr(node)), field="node")
    return run, row


async def get_attempt(user: User, run_id: int, node: str, number: int | None) -> tuple[NodeRun, Attempt]:
    """An attempt of a node (its current one when ``number`` is None)."""
    _, row = await get_node(user, run_id, node)
    wanted = row.attempt if number is None else number
    attempt = await Attempt.get_or_none(node_run_id=row.id, number=wanted)
    if attempt is None:
        raise NotFound(
            msg(
                "node {node} of run {run} has no attempt {number}", node=repr(node), run=run_id, number=wanted
            ),
            field="attempt",
        )
    return row, attempt


async def attempt_log_finished(run_id: int, node: str, number: int) -> bool:
    """Whether attempt ``number`` of a node the caller was already allowed to see is over, so its log gets no
    more lines (``domain.status.attempt_over``); a node or run deleted meanwhile is over too."""
    row = await NodeRun.get_or_none(run_id=run_id, name=node)
    run = await Run.get_or_none(id=run_id)
    if row is None or run is None:
        return True
    return attempt_over(number, row.attempt, row.status.value, run.status.value)


async def output_artifact(user: User, run_id: int, node: str, output: str) -> str:
    """The artifact digest of a node's ``path`` output (for downloads)."""
    _, row = await get_node(user, run_id, node)
    value = (row.outputs or {}).get(output)
    if not value or value.get("type") != "path" or not value.get("digest"):
        raise NotFound(
            msg(
                "node {node} of run {run} has no stored path output {output}",
                node=repr(node),
                run=run_id,
                output=repr(output),
            ),
            field="output",
        )
    return str(value["digest"])


async def run_events(
    user: User, run_id: int, *, node: str | None = None, limit: int = 1000
) -> list[NodeEvent]:
    run = await get_run(user, run_id)
    query = NodeEvent.filter(run_id=run.id)
    if node is not None:
        query = query.filter(node=node)
    # in the order they happened: a node's held start is written after events that came later (``hold_start``)
    return await query.order_by("created_at", "id").limit(limit)


# ------------------------------------------------------------------------------------------------ modules


async def list_modules(
    user: User, *, status: ModuleStatus | None = None, search: str | None = None, category: str | None = None
) -> list[Module]:
    query = modules_visible_to(user)
    if status is not None:
        query = query.filter(status=status)
    if search:
        query = query.filter(name__icontains=search)
    if category:
        query = query.filter(category__name=category)
    return await query.order_by("name")


async def get_module(user: User, module_id: int) -> Module:
    module = await modules_visible_to(user).get_or_none(id=module_id)
    if module is None:
        raise NotFound(msg("module {module} not found", module=module_id), field="id")
    return module


async def list_module_reviews(user: User, *, pending_only: bool = False) -> list[ModuleReview]:
    query = reviews_visible_to(user)
    if pending_only:
        query = query.filter(status="PENDING")
    return await query.order_by("-id")
