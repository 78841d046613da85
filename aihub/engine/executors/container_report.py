"""What the container executor reports about an ended attempt, and how it shows one.

:func:`attempt_report` makes the :class:`ExitReport`: from the exit code the attached client returned (an
ordinary exit needs no ``inspect``), else from the engine's inspect data (times, exit code, a start error,
out of memory: the engine's ``OOMKilled``, conmon's ``oom`` note, or on a cgroup v1 host the peak memory of
the attempt's cgroup parent after a SIGKILL). Outputs are copied out of the ended container and collected by
the rules every executor follows (:func:`aihub.engine.outputs.collect_outputs`). :func:`inspect_view` and
:func:`event_json` are the container and events tabs' rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import re
import shutil
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aihub.engine.executors.base import ExitReport, OutputDecl
from aihub.engine.executors.container_cleanup import CGROUP_ROOT
from aihub.engine.executors.container_cli import EngineCli
from aihub.engine.executors.container_launch import WORKFLOW_SPACE
from aihub.engine.outputs import collect_outputs
from aihub.storage.base import ArtifactStore

__all__ = ["append_log", "attempt_report", "event_json", "inspect_view", "rebuild_log"]

_RFC3339 = re.compile(
    r"(?P<base>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<frac>\d+))?(?P<zone>Z|[+-]\d\d:\d\d)?"
)


async def attempt_report(
    engine: EngineCli,
    artifacts: ArtifactStore,
    data: dict[str, Any],
    inspected: dict[str, Any] | None,
    code: int | None = None,
) -> ExitReport:
    """The report from the engine's inspect data, or from ``code`` alone (an ordinary exit)."""
    stopped = (Path(data["scratch"]) / "stop").exists()
    report = ExitReport(None, started_at=datetime.fromisoformat(data["started_at"]), stopped=stopped)
    if inspected is None and code is not None:
        report.exit_code, report.finished_at = code, datetime.now(UTC)
        if code == 0 and data["outputs"]:
            report.outputs, report.error = await _collect(engine, artifacts, data)
        return report
    if inspected is None:
        report.error = "the container vanished (removed outside AIHub, or the engine's storage was reset)"
        report.finished_at = datetime.now(UTC)
        return report
    _from_inspect(report, data, inspected.get("State") or {})
    if report.exit_code == 0 and report.error is None and not stopped and data["outputs"]:
        report.outputs, report.error = await _collect(engine, artifacts, data)
    return report


def _from_inspect(report: ExitReport, data: dict[str, Any], state: dict[str, Any]) -> None:
    report.finished_at = _time(state.get("FinishedAt")) or datetime.now(UTC)
    report.started_at = _time(state.get("StartedAt")) or report.started_at
    code = state.get("ExitCode")
    report.exit_code = int(code) if isinstance(code, int) else None
    if state.get("Error"):
        report.error = f"the container did not start: {state['Error']}"
    elif not report.stopped and _out_of_memory(data, state):
        report.error = (
            f"out of memory: the container was killed at its memory limit of {data['memory_mib']} MiB "
            "(the task type's memory); choose a task type with more memory"
        )
        append_log(data, report.error)


def _out_of_memory(data: dict[str, Any], state: dict[str, Any]) -> bool:
    if state.get("OOMKilled") or (Path(data["scratch"]) / "oom").exists():  # (conmon's own note)
        return True
    if state.get("ExitCode") != 128 + signal.SIGKILL or not data.get("cgroup_parent"):
        return False
    peak = _read_int(CGROUP_ROOT / "memory" / data["cgroup_parent"].lstrip("/") / "memory.max_usage_in_bytes")
    return peak is not None and peak >= int(data["memory_mib"]) * 1024 * 1024


async def _collect(
    engine: EngineCli, artifacts: ArtifactStore, data: dict[str, Any]
) -> tuple[dict[str, Any], str | None]:
    """Copy each declared output out of the ended container, then collect them as every executor does."""
    scratch = Path(data["scratch"])
    staged: dict[str, Path] = {}
    out_root = scratch / "out"
    for i, decl in enumerate(data["outputs"]):
        path = posixpath.normpath(decl["path"])
        if path.startswith(WORKFLOW_SPACE + "/"):
            staged[decl["path"]] = scratch / "workflow_space" / path.removeprefix(WORKFLOW_SPACE + "/")
            continue
        dest = out_root / str(i)
        dest.mkdir(parents=True, exist_ok=True)
        staged[decl["path"]] = dest / posixpath.basename(path)
        await engine.copy_out(data["container"], path, dest)
    decls = [OutputDecl(**o) for o in data["outputs"]]

    def resolve(node_path: str) -> Path:
        return staged.get(node_path, out_root / "missing")

    try:
        return await collect_outputs(decls, resolve, artifacts, data["max_text"], tmp_dir=scratch)
    finally:
        await asyncio.to_thread(shutil.rmtree, out_root, True)


async def rebuild_log(engine: EngineCli, data: dict[str, Any]) -> None:
    """The log writer died with the previous server: the node's part of the log, again, from the engine."""
    proc = await engine.run([engine.cli, "logs", data["container"]], within=None, check=False, merge=True)
    if proc.returncode == 0:
        await asyncio.to_thread(
            _replace_node_log, Path(data["log"]), int(data.get("log_offset", 0)), proc.stdout
        )


def append_log(data: dict[str, Any], message: str) -> None:
    """A line of the platform's own in the attempt's log."""
    with contextlib.suppress(OSError, KeyError), open(data["log"], "a") as f:
        f.write(f"aihub: {message}\n")


def _replace_node_log(path: Path, offset: int, text: str) -> None:
    with open(path, "r+b" if path.exists() else "wb") as f:
        f.truncate(offset)
        f.seek(offset)
        f.write(text.encode())


def inspect_view(inspected: dict[str, Any]) -> dict[str, Any]:
    """The container tab's part that comes from the engine's inspect data."""
    state = inspected.get("State") or {}
    host = inspected.get("HostConfig") or {}
    status = state.get("Status") or ""
    view: dict[str, Any] = {
        "container_id": (inspected.get("Id") or "")[:12],
        "image_id": (inspected.get("Image") or "")[:19],
        "state": status if status != "exited" else f"exited with code {state.get('ExitCode')}",
        "exit_code": state.get("ExitCode"),
        "oom_killed": bool(state.get("OOMKilled")),
        "limits": {
            "memory": f"{(host.get('Memory') or 0) // (1024 * 1024)} MiB" if host.get("Memory") else "none",
            "cpus": f"{(host.get('NanoCpus') or 0) / 1e9:g}" if host.get("NanoCpus") else "none",
        },
        "engine_started_at": state.get("StartedAt"),
        "engine_finished_at": state.get("FinishedAt"),
    }
    if state.get("Error"):
        view["error"] = state["Error"]
    return view


def event_json(event: dict[str, Any]) -> dict[str, Any]:
    """podman's (Status, Time) or docker's (status/Action, time) event as the events tab's row."""
    when = event.get("Time") or event.get("time")
    if isinstance(when, int | float):
        when = datetime.fromtimestamp(when, UTC).isoformat()
    reason = event.get("Status") or event.get("status") or event.get("Action") or ""
    attributes = event.get("Attributes") or (event.get("Actor") or {}).get("Attributes") or {}
    message = ", ".join(f"{k}={v}" for k, v in attributes.items() if not k.startswith("aihub/")) or ""
    return {
        "time": when,
        "type": "Warning" if reason in ("oom", "kill") else "Normal",
        "reason": reason,
        "message": message,
        "count": 1,
        "source": "podman" if "Status" in event else "docker",
        "object": event.get("Name") or event.get("id") or "",
    }


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _time(value: str | None) -> datetime | None:
    """An engine's RFC 3339 time (nanoseconds, ``Z`` or an offset) as an aware datetime; None when unset."""
    match = _RFC3339.match(value or "")
    if match is None or value is None or value.startswith("0001-"):
        return None
    when = datetime.fromisoformat(match["base"] + (match["zone"] or "+00:00").replace("Z", "+00:00"))
    return when.replace(microsecond=int((match["frac"] or "0")[:6].ljust(6, "0"))).astimezone(UTC)
