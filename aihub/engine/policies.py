"""The engine's rules, as small pure functions over plain state (no database, no executor, no bus).

``Engine`` asks these what to do and carries the answer out: what a finished attempt leads to (succeed,
stop, retry, fail for good), how a run ends, which nodes are ready, whether a node may take its outputs from
the cache, and why a node cannot start at all. Each is tested on its own (``tests/engine/test_policies.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from aihub.domain.status import NodeStatus, RunStatus

#: what a stopped attempt whose exit status is lost records: killed by SIGKILL (128 + 9), as docs/engine.md says
KILLED_EXIT_CODE = 137


class AttemptOutcome(StrEnum):
    """What the end of an attempt does to its node."""

    SUCCEED = "succeed"  # outputs recorded, children unblocked
    STOP = "stop"  # stopped (by the user, or the executor reports it stopped)
    RETRY = "retry"  # back to WAITING, one automatic retry used
    FAIL = "fail"  # failed for good: the run fails fast


@dataclass(frozen=True)
class AttemptEnd:
    """The facts about an attempt's end the decision needs."""

    ok: bool
    stopped: bool
    run_stopping: bool
    retries_used: int
    retries_allowed: int


def attempt_outcome(end: AttemptEnd) -> AttemptOutcome:
    """Success wins; then a stop (of the attempt or of the run); then a retry while any are left; else fail."""
    if end.ok:
        return AttemptOutcome.SUCCEED
    if end.stopped or end.run_stopping:
        return AttemptOutcome.STOP
    if end.retries_used < end.retries_allowed:
        return AttemptOutcome.RETRY
    return AttemptOutcome.FAIL


def stopped_exit_code(exit_code: int | None, started: bool) -> int | None:
    """A stopped attempt that ran has an exit code: 137 (killed) when the executor could not read one because
    the kill took its supervisor too (a PID namespace ends with its first process). Never started: none."""
    if exit_code is None and started:
        return KILLED_EXIT_CODE
    return exit_code


def run_outcome(
    *, stopping: bool, failed_node: str | None, busy: bool, statuses: Iterable[NodeStatus]
) -> RunStatus | None:
    """How a run ends now, or None while it goes on (nodes running or queued, or more ready)."""
    if busy:
        return None
    if stopping:
        return RunStatus.STOPPED
    if failed_node is not None:
        return RunStatus.FAILED
    if all(s.is_done_ok for s in statuses):
        return RunStatus.SUCCEEDED
    return None


def unfinished_parents(
    parents: Mapping[str, Sequence[str]], statuses: Mapping[str, NodeStatus]
) -> dict[str, int]:
    """For each node, how many of its parents have not (yet) given their outputs."""
    return {name: sum(1 for p in ps if not statuses[p].is_done_ok) for name, ps in parents.items()}


def is_ready(status: NodeStatus, unfinished: int) -> bool:
    """A node may be queued: it waits and every parent has given its outputs."""
    return status is NodeStatus.WAITING and unfinished == 0


def ready_nodes(
    order: Iterable[str], unfinished: Mapping[str, int], statuses: Mapping[str, NodeStatus]
) -> list[str]:
    """The nodes that may be queued now, in ``order`` (topological: parents first)."""
    return [n for n in order if is_ready(statuses[n], unfinished[n])]


def first_failed(statuses: Mapping[str, NodeStatus]) -> str | None:
    """The node whose failure fails the run (a run that is resumed after a restart remembers it)."""
    return next((n for n, s in statuses.items() if s is NodeStatus.FAILED), None)


def may_use_cache(*, node_cache: bool, run_use_cache: bool, has_build: bool) -> bool:
    """Only module nodes have a cache key (the build is part of it); the node and the run must both allow it."""
    return has_build and node_cache and run_use_cache


@dataclass(frozen=True)
class Room:
    """A request and the cluster it goes to, in plain numbers."""

    cluster: str
    cpu_millis: int
    memory_mib: int
    gpu: int
    total_cpu_millis: int
    total_memory_mib: int
    total_gpu: int


def cannot_fit_reason(room: Room) -> str | None:
    """Why the request can never fit its cluster, even empty (None: it can)."""
    if (
        room.cpu_millis <= room.total_cpu_millis
        and room.memory_mib <= room.total_memory_mib
        and room.gpu <= room.total_gpu
    ):
        return None
    return (
        f"needs {room.cpu_millis}m CPU, {room.memory_mib} MiB, {room.gpu} GPU but cluster {room.cluster!r} "
        f"has {room.total_cpu_millis}m CPU, {room.total_memory_mib} MiB, {room.total_gpu} GPU in all"
    )


def missing_cluster_reason(cluster: str, known: Iterable[str]) -> str | None:
    """Why a node's cluster is unusable because it does not exist (None: it exists)."""
    if cluster in set(known):
        return None
    return f"virtual cluster {cluster!r} does not exist (any more): ask an administrator"


def host_gpu_reason(cluster: str, gpus: int, host_gpus: int, *, runs_on_host: bool) -> str | None:
    """The local executor runs nodes on this host: a node of a GPU cluster that asks for more GPUs than the
    host gives it (AIHUB_LOCAL_GPUS) would run without them, so it fails with this message instead."""
    if not gpus or not runs_on_host or gpus <= host_gpus:
        return None
    return (
        f"needs {gpus} GPU on virtual cluster {cluster!r}, but this host gives the local executor {host_gpus} "
        "GPU (AIHUB_LOCAL_GPUS), so it cannot run here with one: choose a cluster without GPUs, or ask "
        "an administrator to list the host's GPUs in AIHUB_LOCAL_GPUS"
    )


def attempt_label(number: int, retry_count: int) -> str:
    """The message of a started attempt."""
    return f"attempt {number}" + (f" (retry {retry_count})" if retry_count else "")


def retry_message(number: int, reason: str) -> str:
    return f"attempt {number} failed ({reason}); retrying"


def failure_reason(error: str | None, exit_code: int | None) -> str:
    return error or f"exited with code {exit_code}"
