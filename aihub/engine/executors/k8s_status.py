"""What a pod's JSON says about an attempt, read without I/O: whether and how it ended, whether its
containers are stuck (an image that cannot be pulled), and the text of the executor's container tab.

The Kubernetes executor (:mod:`aihub.engine.executors.kubernetes`) feeds these the pods its watches keep
(:mod:`aihub.engine.executors.k8s_watch`); the Kaniko build backend reads container states with them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aihub.engine.executors.k8s_pod import INIT_CONTAINER, MAIN_CONTAINER

#: waiting reasons that never heal by themselves: the attempt fails at once
FATAL_WAITING = frozenset({"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError"})
#: waiting reasons that may heal (a registry hiccup): the attempt fails when they last ``pull_grace`` seconds
SLOW_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff", "CreateContainerError"})


@dataclass
class End:
    """How an attempt's pod ended, as far as Kubernetes tells."""

    exit_code: int | None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


def container_status(pod: dict[str, Any] | None, name: str, *, init: bool = False) -> dict[str, Any] | None:
    if pod is None:
        return None
    key = "initContainerStatuses" if init else "containerStatuses"
    return next((c for c in (pod.get("status") or {}).get(key) or [] if c.get("name") == name), None)


def all_container_statuses(pod: dict[str, Any] | None) -> list[dict[str, Any]]:
    if pod is None:
        return []
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def has_started(status: dict[str, Any] | None) -> bool:
    state = (status or {}).get("state") or {}
    return "running" in state or "terminated" in state


def ended(pod: dict[str, Any] | None, gone: bool, stopping: bool) -> End | None:
    """How the attempt ended, or None while it has not."""
    main = container_status(pod, MAIN_CONTAINER)
    terminated = ((main or {}).get("state") or {}).get("terminated")
    if terminated is not None:
        code = int(terminated.get("exitCode", 1))
        error = None
        if terminated.get("reason") == "OOMKilled":
            error = f"exited with code {code}: killed for using more memory than its limit (OOMKilled)"
        return End(
            code, error, parse_time(terminated.get("startedAt")), parse_time(terminated.get("finishedAt"))
        )
    if gone:
        if stopping:
            return End(None)
        return End(None, "the pod was deleted before its command ended")
    status = (pod or {}).get("status") or {}
    if status.get("phase") == "Failed":
        for init in status.get("initContainerStatuses") or []:
            term = (init.get("state") or {}).get("terminated") or {}
            if term and term.get("exitCode", 0) != 0:
                return End(None, f"init container {init.get('name')} failed: {container_text(init)}")
        reason = ": ".join(p for p in (status.get("reason"), status.get("message")) if p)
        return End(None, f"the pod failed: {reason or 'no reason given'}")
    if status.get("phase") == "Succeeded":
        return End(None, "the pod succeeded but its main container reported no exit status")
    return None


def state_text(pod: dict[str, Any], stopping: bool) -> str:
    main = container_status(pod, MAIN_CONTAINER)
    if main is None:
        status = pod.get("status") or {}
        for cond in status.get("conditions") or []:
            if cond.get("status") == "False" and cond.get("reason"):
                return f"pending: {cond['reason']}: {cond.get('message', '')}".rstrip(": ")
        return f"pending ({status.get('phase') or 'Pending'})"
    text = container_text(main)
    deleting = (pod.get("metadata") or {}).get("deletionTimestamp")
    if stopping or deleting:
        text += " (stopping)" if "running" in (main.get("state") or {}) else " (stopped)"
    return text


def container_text(status: dict[str, Any] | None) -> str:
    state = (status or {}).get("state") or {}
    if "running" in state:
        return f"running since {state['running'].get('startedAt', '?')}"
    if "terminated" in state:
        term = state["terminated"]
        return f"exited with code {term.get('exitCode')} ({term.get('reason') or 'no reason'})"
    if "waiting" in state:
        waiting = state["waiting"]
        return f"waiting: {waiting.get('reason', '')}: {waiting.get('message', '')}".rstrip(": ")
    return "not started"


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def stuck(
    pod: dict[str, Any] | None, slow_since: dict[str, float], now: float, pull_grace: float, delay: float
) -> tuple[End | None, float]:
    """A pod whose containers cannot start: the end to report (or None), and when to look again (at most
    ``delay`` seconds). ``slow_since`` remembers since when each slow reason was seen (updated here)."""
    for status in all_container_statuses(pod):
        waiting = (status.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason", "")
        what = f"container {status.get('name')}: {reason}: {waiting.get('message', '')}".rstrip(": ")
        if reason in FATAL_WAITING:
            return End(None, f"cannot start: {what}"), 0
        if reason in SLOW_WAITING:
            since = slow_since.setdefault(reason, now)
            if now - since >= pull_grace:
                return End(None, f"cannot start after {pull_grace:g} s: {what}"), 0
            delay = min(delay, since + pull_grace - now)
    return None, max(delay, 0.0)


def describe_pod(pod: dict[str, Any], name: str, namespace: str, stopping: bool) -> dict[str, Any]:
    """The container tab of an attempt's pod."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    main = next((c for c in spec.get("containers") or [] if c.get("name") == MAIN_CONTAINER), {})
    return {
        "executor": "kubernetes",
        "namespace": namespace,
        "pod": name,
        "node": spec.get("nodeName") or "",
        "host_ip": status.get("hostIP") or "",
        "pod_ip": status.get("podIP") or "",
        "phase": status.get("phase") or "Pending",
        "image": main.get("image", ""),
        "argv": list(main.get("command") or [])[5:],  # after: busybox sh -c WRAPPER aihub
        "env": sorted(e["name"] for e in main.get("env") or [] if not e["name"].startswith("_AIHUB_")),
        "resources": main.get("resources") or {},
        "node_selector": spec.get("nodeSelector") or {},
        "state": state_text(pod, stopping),
        "init": container_text(container_status(pod, INIT_CONTAINER, init=True)),
        "conditions": [_condition_text(c) for c in status.get("conditions") or []],
        "created_at": (pod.get("metadata") or {}).get("creationTimestamp"),
        "started_at": status.get("startTime"),
    }


def _condition_text(condition: dict[str, Any]) -> str:
    text = f"{condition.get('type')}={condition.get('status')}"
    if condition.get("reason"):
        text += f" ({condition['reason']}: {condition.get('message', '')})"
    return text
