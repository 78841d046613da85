"""The engine's rules on their own (``aihub.engine.policies``): plain values in, a decision out, no database."""

from __future__ import annotations

import pytest

from aihub.domain.status import NodeStatus, RunStatus
from aihub.engine import policies
from aihub.engine.policies import AttemptEnd, AttemptOutcome, Room

N = NodeStatus


def _end(**changes: object) -> AttemptEnd:
    base = {"ok": False, "stopped": False, "run_stopping": False, "retries_used": 0, "retries_allowed": 0}
    return AttemptEnd(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("end", "outcome"),
    [
        (_end(ok=True), AttemptOutcome.SUCCEED),
        (_end(ok=True, run_stopping=True), AttemptOutcome.SUCCEED),  # it finished before the stop reached it
        (_end(stopped=True, retries_allowed=3), AttemptOutcome.STOP),  # a stop is never retried
        (_end(run_stopping=True, retries_allowed=3), AttemptOutcome.STOP),
        (_end(retries_used=0, retries_allowed=2), AttemptOutcome.RETRY),
        (_end(retries_used=1, retries_allowed=2), AttemptOutcome.RETRY),
        (_end(retries_used=2, retries_allowed=2), AttemptOutcome.FAIL),  # all used: fails for good
        (_end(retries_used=5, retries_allowed=2), AttemptOutcome.FAIL),
        (_end(), AttemptOutcome.FAIL),
    ],
)
def test_what_a_finished_attempt_leads_to(end: AttemptEnd, outcome: AttemptOutcome) -> None:
    assert policies.attempt_outcome(end) is outcome


def test_a_retries_2_node_that_always_fails_runs_three_times() -> None:
    used, attempts = 0, 0
    while True:
        attempts += 1
        outcome = policies.attempt_outcome(_end(retries_used=used, retries_allowed=2))
        if outcome is not AttemptOutcome.RETRY:
            break
        used += 1
    assert (attempts, outcome) == (3, AttemptOutcome.FAIL)


def test_a_stopped_attempt_whose_status_was_lost_records_137() -> None:
    """The race behind the audit's None: the kill takes the supervisor (the PID namespace's first process)
    along, and the waiter reads "no exit status" before stop() writes 137 for it."""
    assert policies.stopped_exit_code(None, started=True) == 137
    assert policies.stopped_exit_code(143, started=True) == 143
    assert policies.stopped_exit_code(None, started=False) is None  # stopped before it ever started


@pytest.mark.parametrize(
    ("kw", "ending"),
    [
        ({"stopping": False, "failed_node": None, "busy": True, "statuses": [N.RUNNING]}, None),
        ({"stopping": True, "failed_node": None, "busy": True, "statuses": [N.RUNNING]}, None),  # nodes end first
        ({"stopping": True, "failed_node": "a", "busy": False, "statuses": [N.FAILED]}, RunStatus.STOPPED),
        ({"stopping": False, "failed_node": "a", "busy": False, "statuses": [N.FAILED, N.WAITING]}, RunStatus.FAILED),
        ({"stopping": False, "failed_node": None, "busy": False, "statuses": [N.SUCCEEDED, N.SKIPPED]}, RunStatus.SUCCEEDED),
        ({"stopping": False, "failed_node": None, "busy": False, "statuses": []}, RunStatus.SUCCEEDED),
        # a node became ready meanwhile: the run goes on
        ({"stopping": False, "failed_node": None, "busy": False, "statuses": [N.SUCCEEDED, N.WAITING]}, None),
    ],
)  # fmt: skip
def test_how_a_run_ends(kw: dict, ending: RunStatus | None) -> None:
    assert policies.run_outcome(**kw) is ending


def test_readiness_follows_the_parents_outputs() -> None:
    parents = {"a": [], "b": ["a"], "c": ["a", "b"], "d": []}
    statuses = {"a": N.SKIPPED, "b": N.WAITING, "c": N.WAITING, "d": N.RUNNING}
    unfinished = policies.unfinished_parents(parents, statuses)
    assert unfinished == {"a": 0, "b": 0, "c": 1, "d": 0}
    # a cached (SKIPPED) parent gives its outputs; a RUNNING node is not ready again
    assert policies.ready_nodes(["a", "d", "b", "c"], unfinished, statuses) == ["b"]
    assert policies.is_ready(N.WAITING, 0) and not policies.is_ready(N.WAITING, 1)
    assert not policies.is_ready(N.FAILED, 0)


def test_the_first_failed_node_is_remembered() -> None:
    assert policies.first_failed({"a": N.SUCCEEDED, "b": N.FAILED, "c": N.FAILED}) == "b"
    assert policies.first_failed({"a": N.SUCCEEDED}) is None


@pytest.mark.parametrize(
    ("node_cache", "run_use_cache", "has_build", "uses"),
    [
        (True, True, True, True),
        (False, True, True, False),
        (True, False, True, False),
        (True, True, False, False),
    ],
)
def test_cache_decision(node_cache: bool, run_use_cache: bool, has_build: bool, uses: bool) -> None:
    assert (
        policies.may_use_cache(node_cache=node_cache, run_use_cache=run_use_cache, has_build=has_build)
        is uses
    )


def test_why_a_node_cannot_start() -> None:
    assert policies.missing_cluster_reason("gpu", ["local"]) == (
        "virtual cluster 'gpu' does not exist (any more): ask an administrator"
    )
    assert policies.missing_cluster_reason("local", ["local"]) is None
    fits = Room("c", 1000, 1024, 0, 4000, 8192, 0)
    assert policies.cannot_fit_reason(fits) is None
    too_big = Room("c", 8000, 1024, 1, 4000, 8192, 0)
    assert policies.cannot_fit_reason(too_big) == (
        "needs 8000m CPU, 1024 MiB, 1 GPU but cluster 'c' has 4000m CPU, 8192 MiB, 0 GPU in all"
    )
    assert policies.host_gpu_reason("g", 2, 1, runs_on_host=True) is not None
    assert "AIHUB_LOCAL_GPUS" in (policies.host_gpu_reason("g", 2, 1, runs_on_host=True) or "")
    assert policies.host_gpu_reason("g", 2, 1, runs_on_host=False) is None  # Kubernetes has its own GPUs
    assert policies.host_gpu_reason("g", 1, 1, runs_on_host=True) is None
    assert policies.host_gpu_reason("g", 0, 0, runs_on_host=True) is None


def test_messages() -> None:
    assert policies.attempt_label(1, 0) == "attempt 1"
    assert policies.attempt_label(3, 2) == "attempt 3 (retry 2)"
    assert policies.failure_reason(None, 2) == "exited with code 2"
    assert policies.failure_reason("lost", 2) == "lost"
    assert (
        policies.retry_message(1, "exited with code 2") == "attempt 1 failed (exited with code 2); retrying"
    )
