"""The transition tables of ``aihub.domain.status``: every status has a row, and the moves the product makes
are in them (no database)."""

from __future__ import annotations

import itertools
from enum import StrEnum

import pytest

from aihub.domain.status import (
    BUILD_TRANSITIONS,
    MODULE_TRANSITIONS,
    NODE_TRANSITIONS,
    REVIEW_TRANSITIONS,
    RUN_TRANSITIONS,
    BuildStatus,
    IllegalTransition,
    ModuleStatus,
    NodeStatus,
    ReviewStatus,
    RunStatus,
    attempt_over,
    check_node_transition,
    check_transition,
    sources,
)

M, B, V, N = ModuleStatus, BuildStatus, ReviewStatus, NodeStatus


@pytest.mark.parametrize(
    ("enum", "table"),
    [
        (RunStatus, RUN_TRANSITIONS),
        (NodeStatus, NODE_TRANSITIONS),
        (ModuleStatus, MODULE_TRANSITIONS),
        (BuildStatus, BUILD_TRANSITIONS),
        (ReviewStatus, REVIEW_TRANSITIONS),
    ],
)
def test_every_status_has_a_row(enum: type[StrEnum], table: dict) -> None:
    assert set(table) == set(enum)
    assert all(set(targets) <= set(enum) for targets in table.values())


def test_a_node_that_cannot_start_fails_from_waiting() -> None:
    check_node_transition("n", N.WAITING, N.FAILED)
    with pytest.raises(IllegalTransition, match="node 'n' cannot go from SUCCEEDED to FAILED"):
        check_node_transition("n", N.SUCCEEDED, N.FAILED)


def test_module_life() -> None:
    path = [M.BUILDING, M.BUILT, M.PENDING_REVIEW, M.REJECTED, M.PENDING_REVIEW, M.PUBLISHED, M.BUILDING]
    for current, target in itertools.pairwise(path):
        check_transition("module", MODULE_TRANSITIONS, "m", current, target)
    assert sources(MODULE_TRANSITIONS, M.BUILDING) == frozenset(M)  # an edit rebuilds from any state
    assert sources(MODULE_TRANSITIONS, M.PUBLISHED) == {M.PENDING_REVIEW}
    with pytest.raises(IllegalTransition, match="module 'm' cannot go from BUILD_FAILED to PENDING_REVIEW"):
        check_transition("module", MODULE_TRANSITIONS, "m", M.BUILD_FAILED, M.PENDING_REVIEW)


def test_builds_and_reviews_end_once() -> None:
    assert sources(BUILD_TRANSITIONS, B.BUILT) == {B.BUILDING}
    with pytest.raises(IllegalTransition):
        check_transition("build", BUILD_TRANSITIONS, "3", B.BUILD_FAILED, B.BUILT)
    assert sources(REVIEW_TRANSITIONS, V.REJECTED) == {V.PENDING}
    with pytest.raises(IllegalTransition):
        check_transition("review", REVIEW_TRANSITIONS, "1", V.APPROVED, V.REJECTED)


@pytest.mark.parametrize(
    ("number", "current", "node", "run", "over"),
    [
        (1, 1, "RUNNING", "RUNNING", False),  # still writing
        (1, 1, "SUCCEEDED", "RUNNING", True),
        (1, 1, "WAITING", "RUNNING", True),  # failed, a retry is waiting
        (1, 2, "RUNNING", "RUNNING", True),  # a later attempt runs
        (2, 1, "WAITING", "RUNNING", False),  # not started yet
        (2, 1, "WAITING", "STOPPED", True),  # and never will
    ],
)
def test_when_an_attempts_log_is_finished(number: int, current: int, node: str, run: str, over: bool) -> None:
    assert attempt_over(number, current, node, run) is over
