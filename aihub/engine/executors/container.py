"""The container executor: each attempt of a node runs in a container of its image, on this host's engine.

``AIHUB_EXECUTOR=container`` with ``AIHUB_CONTAINER_ENGINE=auto|podman|docker`` (auto: podman, else docker).

**Why the CLI and not the REST socket.** Both engines ship the same CLI verbs (``create``, ``cp``, ``start``,
``inspect``, ``stop``, ``events``, ``rm``), whereas their sockets differ (libpod's API vs Docker's, a system
service that must be enabled for podman, which is daemonless); the CLI needs no service, no extra client
library, and is what a module developer already uses to debug. The cost is one process per verb — measured
in ``bench/containers.py`` — and it is kept off the hand-off path: one ``create`` and one attached ``start``
per attempt, the removal afterwards in the background.

Shape of one attempt (``work_root/r{run}-{node}-a{attempt}/`` is its *scratch dir* on this host)::

    create  --name aihub-r1-node-a1 --label aihub/run=1 ... --env-file scratch/env
            -v scratch/workflow_space:/tmp/workflow_space  -v storage:path ...
            --memory/--memory-swap (the SKU's memory), --cpus (its CPU), GPUs (CDI / --gpus)
            --entrypoint ARGV0 IMAGE ARGV1...      (plain node: sh -c COMMAND; module: ENTRYPOINT --name=value)
    cp      input artifacts, unpacked on the host, as one tar stream to the container's /  (before start)
    start --attach                  (a child in its own session: writes the log file as the node prints)
    inspect                         (exit code, OOM, times) -> outputs copied out (cp CTR:PATH -)
    rm                              (in the background; the inspect data and events are kept in the scratch dir)

- **The seed's contract** as on Kubernetes: the image's own filesystem, ``/tmp/workflow_space`` an empty
  directory of the attempt, ``AI_HUB_*`` variables, data storages bound at their paths (``host_path``).
- **Logs** stream live: the attached client's stdout and stderr *are* the attempt's log file. When that client
  is gone (it died with a crashed server) the log is rebuilt from ``logs`` of the engine after the end.
- **Restart safety**: the container carries labels ``aihub/run``, ``aihub/node``, ``aihub/attempt`` and
  ``aihub/key``; ``find`` looks it up by them and ``wait`` follows it with ``wait`` of the engine. A saved report
  (``report.json``) answers every later ``wait``.
- **Out of memory**: the engine's ``OOMKilled``; on a cgroup v1 host, where podman does not see OOM kills,
  each container gets a cgroup parent of its own whose peak memory is read after a SIGKILL.
- **Network**: ``AIHUB_CONTAINER_NETWORK`` (default ``host``: nodes reach the API at the same address as the
  local executor's nodes do).

The parts: :mod:`~aihub.engine.executors.container_cli` (the engine's CLI verbs),
:mod:`~aihub.engine.executors.container_launch` (``create``, inputs in, ``start --attach``),
:mod:`~aihub.engine.executors.container_report` (the report, outputs copied out, the tabs' rows) and
:mod:`~aihub.engine.executors.container_cleanup` (batched removal); this module follows attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aihub.engine.executors.base import ExitReport, Handle, Job, JobKey, SharedWaits, read_json, write_json
from aihub.engine.executors.container_cleanup import Cleaner
from aihub.engine.executors.container_cli import EngineCli, find_engine_cli, tail
from aihub.engine.executors.container_launch import LABEL_INSTANCE, Launcher, LaunchError
from aihub.engine.executors.container_report import (
    append_log,
    attempt_report,
    event_json,
    inspect_view,
    rebuild_log,
)
from aihub.engine.executors.k8s_pod import LABEL_ATTEMPT, LABEL_NODE, LABEL_RUN, label_value, pod_name
from aihub.engine.executors.processes import child_ended
from aihub.settings import absolute_path
from aihub.storage.base import ArtifactStore, LogStore

__all__ = ["ContainerExecutor", "container_name", "find_engine_cli"]

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "python:3.11-slim"
_CGROUP_PARENT = "aihub"  # cgroup v1 + cgroupfs: /aihub/<slug> per attempt (for OOM evidence)
_STOP_MARGIN = 30.0  # seconds past the grace period for the engine's stop to return


# attached clients still running when their executor was closed: kept (no ResourceWarning), reaped later
_orphans: set[subprocess.Popen[bytes]] = set()


def container_name(key: JobKey, instance: str) -> str:
    """``aihub-r{run}-{node}-a{attempt}-{instance}``: the Kubernetes pod name (DNS-safe, unique per attempt) and
    the installation's mark, so two installations (data dirs) on one engine never take each other's names."""
    return f"{pod_name(key)}-{instance}"


class ContainerExecutor:
    """Runs attempts as containers of the host's engine (see the module docstring)."""

    name = "container"

    def __init__(
        self,
        work_root: Path,
        artifacts: ArtifactStore,
        logs: LogStore,
        *,
        engine: Literal["auto", "podman", "docker"] = "auto",
        default_image: str = DEFAULT_IMAGE,
        network: str = "host",
        insecure_registries: Sequence[str] = (),
        keep_containers: bool = False,
    ) -> None:
        self.work_root = absolute_path(work_root)
        self.instance = hashlib.sha256(str(self.work_root).encode()).hexdigest()[:8]
        self.artifacts = artifacts
        self.logs = logs
        self.engine_choice = engine
        self.default_image = default_image
        self.network = network
        self._cli = EngineCli()
        registries = [r for r in insecure_registries if r]
        self._launcher = Launcher(
            self._cli, artifacts, instance=self.instance, network=network, insecure_registries=registries
        )
        self._cleaner = Cleaner(self._cli, keep_containers=keep_containers)
        self._cgroup_v1 = False
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._waits = SharedWaits()
        self._host = socket.gethostname()

    @property
    def engine(self) -> str:
        """``podman`` or ``docker`` once probed."""
        return self._cli.engine

    # ------------------------------------------------------------------------------------- lifecycle
    async def probe(self) -> None:
        """Find the engine's CLI and check that it answers (``info``)."""
        if self._cli.cli:
            return
        engine, cli = find_engine_cli(self.engine_choice)
        proc = await self._cli.run([cli, "info", "--format", "{{json .}}"], within=120, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"AIHUB_EXECUTOR=container: `{engine} info` failed: {tail(proc.stderr)}")
        self._cli.engine, self._cli.cli = engine, cli
        try:
            info = json.loads(proc.stdout)
        except ValueError:
            info = {}
        host = info.get("host") or {}
        self._cgroup_v1 = (
            engine == "podman"
            and host.get("cgroupVersion") == "v1"
            and host.get("cgroupManager") == "cgroupfs"
        )
        self.work_root.mkdir(parents=True, exist_ok=True)

    async def ready(self) -> None:
        """Raise unless the engine answers now (``/readyz``)."""
        await self.probe()
        await self._cli.verb("version", within=30)

    async def close(self) -> None:
        """Stop following attempts. Containers keep running: the next server re-attaches to them."""
        await self._waits.cancel()
        await self.settle()
        _orphans.update(self._children.values())  # each runs in its own session and ends with its container
        self._children.clear()
        for proc in list(_orphans):
            if proc.poll() is not None:
                _orphans.discard(proc)

    async def settle(self) -> None:
        """Clean up every ended container now and wait for it (tests, shutdown)."""
        await self._cleaner.settle()

    # ----------------------------------------------------------------------------------------- start
    async def start(self, job: Job) -> Handle:
        await self.probe()
        scratch = self.work_root / job.key.slug
        if scratch.exists():  # started before a restart, then not recorded: the same attempt
            existing = await self.find(job.key)
            if existing is not None:
                return existing
            await asyncio.to_thread(shutil.rmtree, scratch, True)
        log_path = self.logs.path(job.key.run_id, job.key.node, job.key.attempt)
        data = self._handle_data(job, scratch, log_path)
        await asyncio.to_thread(_prepare_scratch, scratch, data)
        try:
            proc = await self._launch(job, scratch, data)
        except LaunchError as exc:
            await self._cli.remove(data["container"])
            return await asyncio.to_thread(_fail_launch, scratch, data, str(exc))
        self._children[job.key.slug] = proc
        data["pid"], data["start_time"] = proc.pid, _start_time(proc.pid)
        await asyncio.to_thread(write_json, scratch / "meta.json", data)
        return Handle(self.name, job.key.slug, data)

    async def _launch(self, job: Job, scratch: Path, data: dict[str, Any]) -> subprocess.Popen[bytes]:
        """Create the container, copy the inputs in, start it attached (its output into the log)."""
        await self._launcher.create(job, scratch, data)
        await self._launcher.copy_inputs(job, scratch, data["container"])
        log_path = Path(data["log"])
        log_path.parent.mkdir(parents=True, exist_ok=True)
        return await asyncio.to_thread(self._launcher.attach, data["container"], log_path, scratch)

    def _handle_data(self, job: Job, scratch: Path, log_path: Path) -> dict[str, Any]:
        return {
            "container": container_name(job.key, self.instance),
            "engine": self.engine,
            "scratch": str(scratch),
            "log": str(log_path),
            "key": {"run_id": job.key.run_id, "node": job.key.node, "attempt": job.key.attempt},
            "image": job.image or self.default_image,
            "argv": list(job.argv),
            "env_names": sorted(job.env),
            "workdir": job.workdir,
            "outputs": [{"name": o.name, "path": o.path, "type": o.type} for o in job.outputs],
            "max_text": job.max_text_output,
            "memory_mib": job.resources.memory_mib,
            "cpu_millis": job.resources.cpu_millis,
            "gpu": job.resources.gpu,
            "cgroup_parent": f"/{_CGROUP_PARENT}/{job.key.slug}" if self._cgroup_v1 else None,
            "started_at": datetime.now(UTC).isoformat(),
            "pid": None,
            "start_time": None,
        }

    # ------------------------------------------------------------------------------------------ find
    async def find(self, key: JobKey) -> Handle | None:
        """The attempt: ended (its report is saved), or its container, looked up by its labels."""
        await self.probe()
        scratch = self.work_root / key.slug
        data = await asyncio.to_thread(read_json, scratch / "meta.json")
        if data is None:
            return None
        if (scratch / "report.json").exists() or (scratch / "exit").exists():
            return Handle(self.name, key.slug, data)
        listed = await self._cli.verb(
            "ps",
            "-a",
            "--filter",
            f"label={LABEL_RUN}={key.run_id}",
            "--filter",
            f"label={LABEL_NODE}={label_value(key.node)}",
            "--filter",
            f"label={LABEL_ATTEMPT}={key.attempt}",
            "--filter",
            f"label={LABEL_INSTANCE}={self.instance}",
            "--format",
            "{{.Names}}",
            check=False,
        )
        names = listed.stdout.split()
        if data["container"] not in names:
            return None  # never created (the server stopped between the scratch dir and the create)
        return Handle(self.name, key.slug, data)

    # ------------------------------------------------------------------------------------------ wait
    async def wait(self, handle: Handle) -> ExitReport:
        return await self._waits.wait(handle.id, lambda: self._wait(handle))

    async def _wait(self, handle: Handle) -> ExitReport:
        data = handle.data
        scratch = Path(data["scratch"])
        saved = await asyncio.to_thread(read_json, scratch / "report.json")
        if saved is not None:
            return ExitReport.from_json(saved)
        failed = _read_text(scratch / "exit")
        if failed is not None:  # could not launch
            return ExitReport(None, error=failed.removeprefix("error:").strip())
        code = await self._until_ended(handle)
        # an ordinary exit code from our own client says all the report needs: no inspect on the hand-off path
        # (it runs in the background for the container tab); stopped, killed or failed to start: inspect now
        ordinary = code is not None and 0 <= code <= 124 and not (scratch / "stop").exists()
        state = None if ordinary else await self._cli.inspect(data["container"])
        report = await attempt_report(self._cli, self.artifacts, data, state, code if ordinary else None)
        await asyncio.to_thread(write_json, scratch / "report.json", report.to_json())
        self._cleaner.later(data, state)
        return report

    async def _until_ended(self, handle: Handle) -> int | None:
        """Wait for the container's end; its exit code as our attached client returned it (None when the
        attempt was re-attached after a restart: the engine tells when it ends, the log is completed)."""
        data = handle.data
        child = self._children.get(handle.id)
        if child is not None:
            await child_ended(child)
            self._children.pop(handle.id, None)
            return child.returncode
        writer_alive = _alive(data.get("pid"), data.get("start_time"))
        await self._cli.verb("wait", data["container"], within=None, check=False)
        if writer_alive:  # the client of the previous server is still writing the log: let it finish
            await _until_gone(data.get("pid"), data.get("start_time"), 10.0)
        else:
            await rebuild_log(self._cli, data)
        return None

    # ------------------------------------------------------------------------------------------ stop
    async def stop(self, handle: Handle, grace: float) -> None:
        """The engine's stop: SIGTERM, then SIGKILL after ``grace`` seconds; returns once it ended."""
        data = handle.data
        scratch = Path(data["scratch"])
        if (scratch / "report.json").exists() or (scratch / "exit").exists():
            return
        (scratch / "stop").touch()
        seconds = max(math.ceil(grace), 0)
        stopped = await self._cli.verb(
            "stop", "-t", str(seconds), data["container"], within=grace + _STOP_MARGIN, check=False
        )
        if stopped.returncode != 0:
            log.warning("container executor: stop of %s: %s", data["container"], tail(stopped.stderr))

    # -------------------------------------------------------------------------------------- describe
    async def describe(self, handle: Handle) -> dict[str, Any]:
        data = handle.data
        scratch = Path(data["scratch"])
        inspected = await self._cli.inspect(data["container"]) if not data.get("error") else None
        if inspected is None:
            inspected = await asyncio.to_thread(read_json, scratch / "inspect.json")
        text = {
            "executor": self.name,
            "engine": data.get("engine") or self.engine,
            "host": self._host,
            "container": data["container"],
            "image": data["image"],
            "argv": list(data["argv"]),
            "workdir": data["workdir"] or "(the image's)",
            "env": list(data["env_names"]),  # names only: values may be tokens
            "resources": {
                "cpu": f"{data['cpu_millis'] / 1000:g}",
                "memory": f"{data['memory_mib']} MiB",
                "gpu": data["gpu"],
            },
            "network": self.network,
            "started_at": data["started_at"],
        }
        failed = _read_text(scratch / "exit")
        if failed is not None:
            text["state"] = f"failed to start: {failed.removeprefix('error:').strip()}"
        if inspected is not None:
            text.update(inspect_view(inspected))
        elif failed is None:
            text["state"] = "removed"
        return text

    async def events(self, handle: Handle) -> list[dict[str, Any]]:
        """The engine's events of this container (it keeps those of removed containers too)."""
        data = handle.data
        scratch = Path(data["scratch"])
        if _read_text(scratch / "exit") is not None:  # never created
            return []
        return await self._events(data)

    async def _events(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        since = data["started_at"]
        args = ["events", "--since", since]
        # podman: the events so far, then it ends; docker: up to now
        args += (
            ["--stream=false"]
            if self.engine == "podman"
            else ["--until", f"{datetime.now(UTC).timestamp():.0f}"]
        )
        args += ["--filter", f"container={data['container']}", "--format", "{{json .}}"]
        proc = await self._cli.verb(*args, within=60, check=False)
        events = []
        for line in proc.stdout.splitlines():
            with contextlib.suppress(ValueError):
                events.append(event_json(json.loads(line)))
        return events


# ------------------------------------------------------------------------------------------- functions


def _prepare_scratch(scratch: Path, data: dict[str, Any]) -> None:
    scratch.mkdir(mode=0o700, parents=True)
    space = scratch / "workflow_space"
    space.mkdir()
    os.chmod(space, 0o1777)  # whatever user the image runs as may write there
    log_path = Path(data["log"])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    data["log_offset"] = log_path.stat().st_size if log_path.exists() else 0
    write_json(scratch / "meta.json", data)


def _fail_launch(scratch: Path, data: dict[str, Any], message: str) -> Handle:
    append_log(data, message)
    (scratch / "exit").write_text(f"error: {message}\n")
    data["error"] = message
    key = data["key"]
    return Handle(ContainerExecutor.name, JobKey(key["run_id"], key["node"], key["attempt"]).slug, data)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _start_time(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(raw[raw.rindex(b")") + 2 :].split()[19])


def _alive(pid: int | None, start_time: int | None) -> bool:
    if pid is None or start_time is None:
        return False
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    fields = raw[raw.rindex(b")") + 2 :].split()
    return fields[0] not in (b"Z", b"X") and int(fields[19]) == start_time


async def _until_gone(pid: int | None, start_time: int | None, within: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            delay = 0.01
            while _alive(pid, start_time):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)
