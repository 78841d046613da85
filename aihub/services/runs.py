"""Runs: create, stop, retry (in place, or from a node), copy.

The engine picks up what these leave behind: a PENDING run is started, a STOPPING run is stopped. Both are
signalled by the run event published on the bus, so the same calls work when the engine is elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping

from tortoise.transactions import in_transaction

from aihub.bus.base import Bus
from aihub.db.models import NodeRun, Run, User
from aihub.db.node_writes import insert_nodes
from aihub.domain import dag
from aihub.domain.bounds import check_run_params
from aihub.domain.handover import HANDOVER
from aihub.domain.messages import msg
from aihub.domain.spec import SpecError, WorkflowSpec, parse_spec, validate_run_params
from aihub.domain.status import NodeStatus, RunStatus
from aihub.services import workflows
from aihub.services.access import can_act_on_run, get_run
from aihub.services.errors import Conflict, InvalidInput, NotFound
from aihub.services.status import StaleStatus, reset_nodes, run_event, transition_node, transition_run
from aihub.services.workflows import get_version


def _check_params(spec: WorkflowSpec, params: Mapping[str, object]) -> dict[str, str]:
    try:
        values = validate_run_params(spec, params)
        check_run_params(values, workflows.spec_limits)
        return values
    except SpecError as exc:
        raise InvalidInput(exc.message, field="params") from exc


async def create_run(
    bus: Bus,
    user: User,
    version_id: int,
    *,
    name: str | None = None,
    params: Mapping[str, object] | None = None,
    use_cache: bool = True,
    copied_from: int | None = None,
) -> Run:
    version = await get_version(user, version_id)
    spec = parse_spec(version.spec)  # (once: a 1,000-node spec takes about 25 ms; the engine takes it below)
    values = _check_params(spec, params or {})
    run_name = (name or "").strip() or f"{version.workflow.name}-v{version.number}"
    if len(run_name) > 200:
        raise InvalidInput(msg("run name is longer than {count} characters", count=200), field="name")
    async with in_transaction():
        run = await Run.create(
            name=run_name,
            version=version,
            workflow_id=version.workflow_id,  # type: ignore[attr-defined]
            owner=user,
            params=values,
            use_cache=use_cache,
            copied_from_id=copied_from,
        )
        await insert_nodes(run.id, [n.name for n in spec.nodes])
    HANDOVER.give((run.id, version.id, run.created_at), spec)  # the engine here need not parse it again
    await bus.publish(run_event(run, message="created"))
    return run


async def _run_for_action(user: User, run_id: int) -> Run:
    run = await get_run(user, run_id)
    if not can_act_on_run(user, run):
        raise NotFound(msg("run {run} not found", run=run_id), field="id")
    return run


async def stop_run(bus: Bus, user: User, run_id: int) -> Run:
    run = await _run_for_action(user, run_id)
    try:
        await _request_stop(bus, user, run)
    except StaleStatus:  # the engine started it meanwhile: stop it as a running run
        await run.refresh_from_db()
        await _request_stop(bus, user, run)
    return run


async def _request_stop(bus: Bus, user: User, run: Run) -> None:
    if run.status is RunStatus.PENDING:  # never started: nothing to signal, it just ends
        await transition_run(bus, run, RunStatus.STOPPED, message=f"stopped by {user.username}")
        for node in await NodeRun.filter(run_id=run.id, status=NodeStatus.WAITING):
            await transition_node(
                bus, run, node, NodeStatus.STOPPED, kind="stopped", message="stopped by user"
            )
    elif run.status is RunStatus.RUNNING:
        await transition_run(bus, run, RunStatus.STOPPING, message=f"stop requested by {user.username}")
    elif run.status is not RunStatus.STOPPING:  # stopping twice is harmless
        raise Conflict(
            msg("run {run} is {status} and cannot be stopped", run=run.id, status=msg(run.status.value)),
            field="id",
        )


def _kept_on_retry(node: NodeRun) -> bool:
    """A retry keeps nodes whose outputs exist: succeeded, or skipped as a cache hit (a node skipped because
    the run failed before it started has none, and runs again)."""
    if node.status is NodeStatus.SKIPPED:
        return node.cache_source_id is not None
    return node.status is NodeStatus.SUCCEEDED


async def retry_run(bus: Bus, user: User, run_id: int, *, from_node: str | None = None) -> Run:
    """Re-run what did not succeed; with ``from_node`` also that node and its descendants."""
    run = await _run_for_action(user, run_id)
    nodes = {n.name: n for n in await NodeRun.filter(run_id=run.id)}
    to_reset = {name for name, n in nodes.items() if not _kept_on_retry(n)}
    if from_node is not None:
        if from_node not in nodes:
            raise InvalidInput(
                msg("run {run} has no node {node}", run=run.id, node=repr(from_node)), field="fromNode"
            )
        parents = parse_spec((await run.version).spec).parents()
        to_reset |= {from_node, *dag.descendants(parents, from_node)}
    if run.status in (RunStatus.FAILED, RunStatus.STOPPED) or (
        run.status is RunStatus.SUCCEEDED and from_node is not None
    ):
        pass
    elif run.status is RunStatus.SUCCEEDED:
        raise Conflict(
            msg("run {run} succeeded; nothing to retry (choose a node to re-run from)", run=run.id),
            field="id",
        )
    else:
        raise Conflict(
            msg(
                "run {run} is {status}; only a finished run can be retried",
                run=run.id,
                status=msg(run.status.value),
            ),
            field="id",
        )
    resettable = [nodes[n] for n in sorted(to_reset) if nodes[n].status is not NodeStatus.WAITING]
    await reset_nodes(bus, run, resettable, message=f"retry {run.retry_count + 1}")
    run.retry_count += 1
    await run.save(update_fields=["retry_count"])
    await transition_run(
        bus, run, RunStatus.PENDING, message=f"retry {run.retry_count} by {user.username}", kind="run_retry"
    )
    return run


async def copy_run(
    bus: Bus, user: User, run_id: int, *, name: str | None = None, params: Mapping[str, object] | None = None
) -> Run:
    source = await get_run(user, run_id)
    merged = {**source.params, **(params or {})}
    return await create_run(
        bus,
        user,
        source.version_id,  # type: ignore[attr-defined]
        name=name or f"{source.name}-copy",
        params=merged,
        use_cache=source.use_cache,
        copied_from=source.id,
    )
