"""Who sees what. An object the caller may not see is reported exactly like a missing one."""

from __future__ import annotations

from tortoise.expressions import Q
from tortoise.queryset import QuerySet

from aihub.db.models import ModuleReview, Run, User, Workflow
from aihub.db.prepared import PreparedSelect
from aihub.domain.messages import msg
from aihub.services.errors import NotFound


def workflows_visible_to(user: User) -> QuerySet[Workflow]:
    if user.is_admin:
        return Workflow.all()
    query = Q(owner_id=user.id)
    if user.team_id is not None:  # type: ignore[attr-defined]
        query |= Q(shared_with_team=True, owner__team_id=user.team_id)  # type: ignore[attr-defined]
    return Workflow.filter(query)


def runs_visible_to(user: User) -> QuerySet[Run]:
    return _runs_visible(user.is_admin, user.id, user.team_id)  # type: ignore[attr-defined]


def _runs_visible(is_admin: bool, user_id: int, team_id: int | None) -> QuerySet[Run]:
    if is_admin:
        return Run.all()
    query = Q(owner_id=user_id)
    if team_id is not None:
        query |= Q(workflow__shared_with_team=True, owner__team_id=team_id)
    return Run.filter(query)


def _visible_run_shape(user: User) -> tuple[str, dict[str, int]]:
    """(shape, parameters) of "the run ``run_id`` if ``user`` may see it", for ``_VISIBLE_RUN``."""
    if user.is_admin:
        return "admin", {}
    if user.team_id is None:  # type: ignore[attr-defined]
        return "own", {"user_id": user.id}
    return "own or team", {"user_id": user.id, "team_id": user.team_id}  # type: ignore[attr-defined]


#: the visible-run select, its SQL made once per shape (the most frequent query of the API: issue 18)
_VISIBLE_RUN = PreparedSelect(
    Run,
    lambda run_id, user_id=None, team_id=None: (
        _runs_visible(user_id is None, user_id or 0, team_id).filter(id=run_id).limit(2)
    ),
)


def reviews_visible_to(user: User) -> QuerySet[ModuleReview]:
    """Admins: all; team leaders (and peers of a peer-review team): their team's; everybody: their own."""
    if user.is_admin:
        return ModuleReview.all()
    query = Q(requester_id=user.id)
    team_id = user.team_id  # type: ignore[attr-defined]
    if team_id is not None:
        if user.is_team_leader:
            query |= Q(requester__team_id=team_id)
        else:
            query |= Q(requester__team_id=team_id, requester__team__peer_review=True)
    return ModuleReview.filter(query)


async def get_workflow(user: User, workflow_id: int) -> Workflow:
    wf = await workflows_visible_to(user).get_or_none(id=workflow_id)
    if wf is None:
        raise NotFound(msg("workflow {workflow} not found", workflow=workflow_id), field="workflowId")
    return wf


async def get_run(user: User, run_id: int) -> Run:
    shape, values = _visible_run_shape(user)
    rows = await _VISIBLE_RUN.fetch(shape, {"run_id": run_id, **values})
    if len(rows) != 1:
        raise NotFound(msg("run {run} not found", run=run_id), field="id")
    return rows[0]


def can_act_on_run(user: User, run: Run) -> bool:
    """Acting (stop/retry) needs ownership or admin; team members may only look."""
    return user.is_admin or run.owner_id == user.id  # type: ignore[attr-defined]
