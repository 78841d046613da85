"""Statuses of runs, nodes, modules, module builds and reviews, each with its table of legal transitions.

Every status change anywhere in the product is checked here, by the one writer of each kind in
``aihub.services.status`` (``transition_run``, ``transition_node``, ``reset_nodes``, ``move_module``,
``move_build``, ``move_reviews``). Detail such as "retrying" or "stopped by user" lives in a message, never in
a new status.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar


class RunStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"

    @property
    def is_terminal(self) -> bool:
        return self in _RUN_TERMINAL

    @property
    def is_active(self) -> bool:
        return not self.is_terminal


class NodeStatus(StrEnum):
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    SKIPPED = "SKIPPED"

    @property
    def is_terminal(self) -> bool:
        return self in _NODE_TERMINAL

    @property
    def is_done_ok(self) -> bool:
        """The node's outputs are available to its children."""
        return self in (NodeStatus.SUCCEEDED, NodeStatus.SKIPPED)


_RUN_TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.STOPPED})
_NODE_TERMINAL = frozenset({NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.STOPPED, NodeStatus.SKIPPED})

R, N = RunStatus, NodeStatus

RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    R.PENDING: frozenset({R.RUNNING, R.STOPPING, R.STOPPED, R.FAILED}),
    R.RUNNING: frozenset({R.SUCCEEDED, R.FAILED, R.STOPPING}),
    R.STOPPING: frozenset({R.STOPPED}),
    # retry of a finished run puts it back in the queue
    R.FAILED: frozenset({R.PENDING}),
    R.STOPPED: frozenset({R.PENDING}),
    # only "retry from node" re-opens a succeeded run
    R.SUCCEEDED: frozenset({R.PENDING}),
}

NODE_TRANSITIONS: dict[NodeStatus, frozenset[NodeStatus]] = {
    # WAITING -> FAILED: a node that cannot start at all (its cluster is gone or too small); it has no attempt
    N.WAITING: frozenset({N.RUNNING, N.SKIPPED, N.STOPPED, N.FAILED}),
    # RUNNING -> WAITING is an automatic retry after a failed attempt
    N.RUNNING: frozenset({N.SUCCEEDED, N.FAILED, N.STOPPED, N.WAITING}),
    # a run retry resets every node that did not succeed; retry-from-node also resets successes
    N.FAILED: frozenset({N.WAITING}),
    N.STOPPED: frozenset({N.WAITING}),
    N.SUCCEEDED: frozenset({N.WAITING}),
    N.SKIPPED: frozenset({N.WAITING}),
}


class IllegalTransition(ValueError):
    """A status change the table does not allow."""

    def __init__(self, kind: str, name: str, current: str, target: str) -> None:
        super().__init__(f"{kind} {name!r} cannot go from {current} to {target}")
        self.kind, self.name, self.current, self.target = kind, name, current, target


def check_run_transition(name: str, current: RunStatus, target: RunStatus) -> None:
    if target not in RUN_TRANSITIONS[current]:
        raise IllegalTransition("run", name, current.value, target.value)


def check_node_transition(name: str, current: NodeStatus, target: NodeStatus) -> None:
    if target not in NODE_TRANSITIONS[current]:
        raise IllegalTransition("node", name, current.value, target.value)


def attempt_over(number: int, current_attempt: int, node_status: str, run_status: str) -> bool:
    """Attempt ``number`` of a node is over — its log gets no more lines — when a later attempt started, the
    attempt ended (the node is no longer RUNNING it), or the run ended. The one rule every log follower uses
    (GraphQL subscription, web page, ``aihub run``)."""
    return (
        current_attempt > number
        or (current_attempt == number and node_status != NodeStatus.RUNNING)
        or RunStatus(run_status).is_terminal
    )


class ModuleStatus(StrEnum):
    BUILDING = "BUILDING"
    BUILT = "BUILT"
    BUILD_FAILED = "BUILD_FAILED"
    PENDING_REVIEW = "PENDING_REVIEW"
    PUBLISHED = "PUBLISHED"
    REJECTED = "REJECTED"


class BuildStatus(StrEnum):
    BUILDING = "BUILDING"
    BUILT = "BUILT"
    BUILD_FAILED = "BUILD_FAILED"


class ReviewStatus(StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


M, B, V = ModuleStatus, BuildStatus, ReviewStatus
S = TypeVar("S", bound=StrEnum)

MODULE_TRANSITIONS: dict[ModuleStatus, frozenset[ModuleStatus]] = {
    # an edit or a rebuild starts a new build whatever the module's state (a pending review is withdrawn)
    M.BUILDING: frozenset({M.BUILDING, M.BUILT, M.BUILD_FAILED}),
    M.BUILT: frozenset({M.BUILDING, M.PENDING_REVIEW}),
    M.BUILD_FAILED: frozenset({M.BUILDING}),
    M.PENDING_REVIEW: frozenset({M.BUILDING, M.PUBLISHED, M.REJECTED}),
    M.PUBLISHED: frozenset({M.BUILDING}),
    # after a rejection the owner may ask again for the same build
    M.REJECTED: frozenset({M.BUILDING, M.PENDING_REVIEW}),
}

BUILD_TRANSITIONS: dict[BuildStatus, frozenset[BuildStatus]] = {
    B.BUILDING: frozenset({B.BUILT, B.BUILD_FAILED}),
    B.BUILT: frozenset(),
    B.BUILD_FAILED: frozenset(),
}

REVIEW_TRANSITIONS: dict[ReviewStatus, frozenset[ReviewStatus]] = {
    # REJECTED also when the module changes under a pending review (withdrawn)
    V.PENDING: frozenset({V.APPROVED, V.REJECTED}),
    V.APPROVED: frozenset(),
    V.REJECTED: frozenset(),
}


def sources(table: dict[S, frozenset[S]], target: S) -> frozenset[S]:
    """Every status the table lets move to ``target`` (what a conditional write may find in the row)."""
    return frozenset(current for current, targets in table.items() if target in targets)


def check_transition(kind: str, table: dict[S, frozenset[S]], name: str, current: S, target: S) -> None:
    if target not in table[current]:
        raise IllegalTransition(kind, name, current.value, target.value)


#: node colours used by the DAG drawing (seed: blue running, green ok, red failed, grey waiting), in shades that
#: carry white text at >= 4.5:1 and stand out from the page at >= 3:1; the same values are app.css's --s-*
#: variables (tests/web/test_contrast.py measures both and checks they agree)
NODE_COLOURS: dict[NodeStatus, str] = {
    N.WAITING: "#616161",
    N.RUNNING: "#1565c0",
    N.SUCCEEDED: "#2e7d32",
    N.FAILED: "#c62828",
    N.STOPPED: "#6d4c41",
    N.SKIPPED: "#33691e",
}
