"""The one place that writes statuses: runs and nodes, modules, module builds and reviews.

Each writer checks ``aihub.domain.status``'s table and writes conditionally — the row changes only if its status
in the database is still one the table lets move (compare-and-set), so two writers can never both move it.
Run and node writers also set timings and counters once, append the event, commit, and only then publish on
the bus. Engine, GraphQL, web and CLI all go through here.

A node's start may be *held* (``hold_start``): the engine has launched the node and moved it to RUNNING in
memory, and its write (the row, the new attempt, the ``started`` event) waits until ``write_start`` — or, for a
node that ends first, goes into its end's transaction: one transaction instead of two (issue 18, round
thirteen). Still written first and published after; only later. Meanwhile the database says the node is
WAITING, as it did between the launch and the write before: recovery finds such an attempt through the
executor (``Recovery._reattach``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Any

from tortoise.transactions import in_transaction

from aihub.bus.base import Bus, RunEvent
from aihub.db import node_writes
from aihub.db.models import Attempt, Module, ModuleBuild, ModuleReview, NodeEvent, NodeRun, Run
from aihub.db.node_writes import ATTEMPT_END_FIELDS, NODE_FIELDS
from aihub.db.retry import retrying
from aihub.domain.clock import utcnow
from aihub.domain.messages import msg
from aihub.domain.status import (
    BUILD_TRANSITIONS,
    MODULE_TRANSITIONS,
    REVIEW_TRANSITIONS,
    BuildStatus,
    ModuleStatus,
    NodeStatus,
    ReviewStatus,
    RunStatus,
    check_node_transition,
    check_run_transition,
    check_transition,
    sources,
)
from aihub.services.errors import Conflict


class StaleStatus(Conflict):
    """The run's status changed in the database since it was read: re-read and decide again."""


def run_event(run: Run, node: NodeRun | None = None, message: str = "") -> RunEvent:
    return RunEvent(
        run_id=run.id,
        run_status=run.status.value,
        node=node.name if node else None,
        node_status=node.status.value if node else None,
        retry_count=node.retry_count if node else run.retry_count,
        attempt=node.attempt if node else None,
        message=message,
    )


async def transition_run(
    bus: Bus, run: Run, target: RunStatus, *, message: str | None = None, kind: str | None = None
) -> None:
    check_run_transition(run.name, run.status, target)
    now = utcnow()
    previous = run.status
    run.status = target
    fields = ["status"]
    if target is RunStatus.RUNNING and run.started_at is None:
        run.started_at = now
        fields.append("started_at")
    if target.is_terminal:
        run.finished_at = now
        fields.append("finished_at")
    elif target is RunStatus.PENDING:
        run.finished_at = None
        fields.append("finished_at")
    if message is not None:
        run.message = message
        fields.append("message")

    async def write(number: int) -> None:
        async with in_transaction():
            # compare-and-set: a service and the engine may race on a run (stop while it is being started)
            values = {f: getattr(run, f) for f in fields}
            if not await Run.filter(id=run.id, status=previous).update(**values):
                if number and await Run.filter(id=run.id, **values).exists():
                    return  # the try before committed, then lost its connection before it heard so
                raise StaleStatus(
                    msg(
                        "run {run} changed status meanwhile; it is no longer {status}",
                        run=run.id,
                        status=msg(previous.value),
                    ),
                    field="id",
                )
            await NodeEvent.create(
                run_id=run.id, kind=kind or f"run_{target.value.lower()}", message=message or ""
            )

    try:
        await retrying(write, what=f"run {run.id} -> {target.value}")
    except BaseException:
        run.status = previous
        raise
    await bus.publish(run_event(run, message=message or ""))


async def _set_node(node: NodeRun, previous: NodeStatus) -> None:
    """Compare-and-set, inside the caller's transaction: write the node only if it still has ``previous``
    status in the database, so two writers (two engine workers, an engine and a service) can never both
    move it; the loser gets ``StaleStatus`` and its transaction writes nothing."""
    if not await node_writes.set_node(node, previous):
        raise _stale(node, previous)


def _stale(node: NodeRun, previous: NodeStatus) -> StaleStatus:
    return StaleStatus(
        f"node {node.name!r} changed status meanwhile; it is no longer {previous.value}", field="node"
    )


async def _node_written(node: NodeRun, number: int) -> bool:
    """A retried write: did the try before commit, then lose its connection before it heard so?"""
    return (
        bool(number)
        and await NodeRun.filter(
            id=node.id, status=node.status, attempt=node.attempt, message=node.message
        ).exists()
    )


def _apply_node(
    node: NodeRun, target: NodeStatus, message: str, exit_code: int | None, outputs: dict | None
) -> None:
    now = utcnow()
    node.status = target
    node.message = message
    if target is NodeStatus.RUNNING:
        node.started_at = now
        node.finished_at = None
        node.exit_code = None
    elif target.is_terminal:
        node.finished_at = now
        if exit_code is not None:
            node.exit_code = exit_code
    if outputs is not None:
        node.outputs = outputs


def _apply_attempt(attempt: Attempt, target: NodeStatus, message: str, exit_code: int | None) -> None:
    attempt.status = target if target is not NodeStatus.WAITING else NodeStatus.FAILED
    if target is not NodeStatus.RUNNING:
        attempt.finished_at = attempt.finished_at or utcnow()
        attempt.exit_code = exit_code
        attempt.message = message


@dataclass
class HeldStart:
    """A node's start, applied to the node and its new attempt in memory, not written yet (``hold_start``)."""

    previous: NodeStatus  # the status the database has (compare-and-set)
    attempt: Attempt  # the new attempt, inserted with the write
    events: list[list[Any]]  # the ``started`` event's row, timed when the node started
    published: RunEvent  # what the bus gets once it is written (with the run's status then: ``_published``)
    writing: asyncio.Future[None] | None = None  # ``write_start`` is writing it


def held_start(node: NodeRun) -> HeldStart | None:
    """The start of ``node`` held (``hold_start``) and not written yet, if any."""
    return node.__dict__.get("_held_start")


def _hold(node: NodeRun, start: HeldStart | None) -> None:
    node.__dict__["_held_start"] = start


def hold_start(run: Run, node: NodeRun, attempt: Attempt, *, kind: str, message: str) -> None:
    """Move ``node`` to RUNNING with its new ``attempt`` (not saved yet) in memory only: written, then published,
    by ``write_start``, or with the node's next transition, whichever comes first. Raises
    ``IllegalTransition`` as ``transition_node`` does (then nothing changed)."""
    check_node_transition(node.name, node.status, NodeStatus.RUNNING)
    if held_start(node) is not None:
        raise RuntimeError(f"node {node.name!r}: a start is held already")
    previous = node.status
    _apply_node(node, NodeStatus.RUNNING, message, None, None)
    _apply_attempt(attempt, NodeStatus.RUNNING, message, None)
    events = [node_writes.event_row(run.id, node.name, node.attempt or None, kind, message)]
    _hold(node, HeldStart(previous, attempt, events, run_event(run, node, message)))


async def write_start(bus: Bus, run: Run, node: NodeRun) -> None:
    """Write ``node``'s held start now, then publish it (nothing when none is held). If the write fails the start
    stays held (a later transition of the node writes it) and the error is raised."""
    start = held_start(node)
    if start is None or start.writing is not None:
        return
    start.writing = asyncio.get_running_loop().create_future()
    try:
        await _write_node(run, node, start.previous, start.attempt, start.events)
        _hold(node, None)
    finally:
        start.writing.set_result(None)
        start.writing = None
    await bus.publish(_published(start, run))


def _published(start: HeldStart, run: Run) -> RunEvent:
    """The held start's event, with the run's status as it is now (a stop may have been asked for meanwhile: a
    subscriber must not see the run go back)."""
    return dataclasses.replace(start.published, run_status=run.status.value)


async def _take_held(node: NodeRun) -> HeldStart | None:
    """The node's held start, taken off it (once one being written is: then there is none)."""
    while (start := held_start(node)) is not None and start.writing is not None:
        await asyncio.shield(start.writing)
    _hold(node, None)
    return start


async def transition_node(
    bus: Bus,
    run: Run,
    node: NodeRun,
    target: NodeStatus,
    *,
    kind: str,
    message: str = "",
    attempt: Attempt | None = None,
    exit_code: int | None = None,
    outputs: dict | None = None,
    extra_events: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> None:
    """Move ``node`` to ``target`` if the table allows it and the database still has the status ``node``
    was read with (compare-and-set); ``attempt`` is saved in the same transaction: a new one whole, a finished one
    its end (``node_writes.ATTEMPT_END_FIELDS``: status, exit code, message, start and end times).
    Raises ``IllegalTransition`` or ``StaleStatus`` (then nothing is written and ``node`` is as it was).
    A start held for the node (``hold_start``) is written in the same transaction, and published first."""
    start = await _take_held(node)
    try:
        check_node_transition(node.name, node.status, target)
        if start is not None and attempt is not None and attempt is not start.attempt:
            raise RuntimeError(f"node {node.name!r}: a transition of another attempt than the held start's")
    except BaseException:
        _hold(node, start)
        raise
    previous = node.status
    if start is not None:
        previous, attempt = start.previous, start.attempt
    before = {f: getattr(node, f) for f in NODE_FIELDS}
    attempt_before = {f: getattr(attempt, f) for f in ATTEMPT_END_FIELDS} if attempt is not None else {}
    _apply_node(node, target, message, exit_code, outputs)
    if attempt is not None:
        _apply_attempt(attempt, target, message, exit_code)
    events = [
        node_writes.event_row(run.id, node.name, node.attempt or None, k, m)
        for k, m in (*extra_events, (kind, message))
    ]
    try:
        await _write_node(run, node, previous, attempt, [*(start.events if start else ()), *events])
    except BaseException:
        for f, value in before.items():
            setattr(node, f, value)
        for f, value in attempt_before.items():
            setattr(attempt, f, value)
        _hold(node, start)
        raise
    if start is not None:
        await bus.publish(_published(start, run))
    await bus.publish(run_event(run, node, message))


async def _write_node(
    run: Run, node: NodeRun, previous: NodeStatus, attempt: Attempt | None, events: list[list[Any]]
) -> None:
    """One node transition's transaction (``node_writes.write_transition``), retried (``retrying``) after a lost
    connection once it is known that the lost try did not commit. Raises ``StaleStatus``."""
    new_attempt = attempt is not None and attempt.id is None

    async def write(number: int) -> None:
        if await _node_written(node, number):
            if new_attempt:  # it was saved too: take its id, so it is not inserted twice later
                saved = await Attempt.get(node_run_id=node.id, number=attempt.number)  # type: ignore[union-attr]
                attempt.id, attempt._saved_in_db = saved.id, True  # type: ignore[union-attr]
            return
        if number and new_attempt:  # the lost transaction may have given it an id: it is new again
            attempt.id = None  # type: ignore[union-attr]
            attempt._saved_in_db = False  # type: ignore[union-attr]
        if not await node_writes.write_transition(node, previous, attempt, events):
            raise _stale(node, previous)

    await retrying(write, what=f"node {run.id}/{node.name} -> {node.status.value}")


async def reset_nodes(bus: Bus, run: Run, nodes: list[NodeRun], *, message: str) -> None:
    """Put finished nodes back to WAITING for a retry of the run: each checked against the table and written
    compare-and-set, all in one transaction (one stale node: none is reset), then each published."""
    for node in nodes:
        check_node_transition(node.name, node.status, NodeStatus.WAITING)
    previous = [node.status for node in nodes]
    before = [{f: getattr(node, f) for f in NODE_FIELDS} for node in nodes]
    for node in nodes:
        node.status = NodeStatus.WAITING
        node.message = message
        node.outputs = {}
        node.exit_code = None
        node.cache_source_id = None
        node.auto_retries = 0

    async def write(number: int) -> None:
        if number and all([await _node_written(node, number) for node in nodes]):
            return
        async with in_transaction():
            for node, status in zip(nodes, previous, strict=True):
                await _set_node(node, status)
            await NodeEvent.bulk_create(
                [NodeEvent(run_id=run.id, node=n.name, kind="reset", message=message) for n in nodes]
            )

    try:
        await retrying(write, what=f"run {run.id}: reset {len(nodes)} nodes")
    except BaseException:
        for node, values in zip(nodes, before, strict=True):
            for f, value in values.items():
                setattr(node, f, value)
        raise
    for node in nodes:
        await bus.publish(run_event(run, node, message))


# ------------------------------------------------------------------ modules, builds, reviews (no bus events)
# These write inside the caller's transaction. Given a row object, the move is checked against the table
# from the object's status and written only if the row still has it; given an id, it is written only if the
# row has a status the table lets move to the target. Either way: True when this call moved it.


async def move_module(module: Module | int, target: ModuleStatus) -> bool:
    """A module's status (``module.status`` is updated in place when an object is given)."""
    if isinstance(module, int):
        query = Module.filter(id=module, status__in=sources(MODULE_TRANSITIONS, target))
        return bool(await query.update(status=target))
    check_transition("module", MODULE_TRANSITIONS, module.name, module.status, target)
    if not await Module.filter(id=module.id, status=module.status).update(status=target):
        raise StaleStatus(
            msg("module {name} changed status meanwhile; try again", name=repr(module.name)), field="id"
        )
    module.status = target
    return True


async def move_build(build: ModuleBuild, target: BuildStatus) -> bool:
    """A module build ends; False when it had ended already (another writer won)."""
    check_transition("build", BUILD_TRANSITIONS, str(build.number), build.status, target)
    if not await ModuleBuild.filter(id=build.id, status=build.status).update(status=target):
        return False
    build.status = target
    return True


async def move_review(review: ModuleReview, target: ReviewStatus) -> None:
    """A review is decided (``review.status`` is updated in place)."""
    check_transition("review", REVIEW_TRANSITIONS, str(review.id), review.status, target)
    if not await ModuleReview.filter(id=review.id, status=review.status).update(status=target):
        raise StaleStatus(msg("review {review} was decided meanwhile", review=review.id), field="reviewId")
    review.status = target


async def move_reviews(module_id: int, target: ReviewStatus, **values: object) -> int:
    """Every review of the module that may move to ``target`` does (e.g. withdrawn: pending -> REJECTED)."""
    query = ModuleReview.filter(module_id=module_id, status__in=sources(REVIEW_TRANSITIONS, target))
    return await query.update(status=target, **values)
