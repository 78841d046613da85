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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import posixpath
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aihub.engine.artifacts import ArtifactError, unpack
from aihub.engine.executors.base import (
    ExitReport,
    Handle,
    Job,
    JobKey,
    OutputDecl,
    SharedWaits,
    read_json,
    write_json,
)
from aihub.engine.executors.k8s_pod import LABEL_ATTEMPT, LABEL_NODE, LABEL_RUN, label_value, pod_name
from aihub.engine.outputs import collect_outputs
from aihub.settings import absolute_path
from aihub.storage.base import ArtifactMissing, ArtifactStore, LogStore, StoreError

__all__ = ["ContainerExecutor", "container_name", "find_engine_cli"]

log = logging.getLogger(__name__)

WORKFLOW_SPACE = "/tmp/workflow_space"
LABEL_KEY = "aihub/key"
LABEL_INSTANCE = "aihub/instance"  # the installation: a hash of its scratch root
DEFAULT_IMAGE = "python:3.11-slim"
RESERVED_ENV_PREFIX = "_AIHUB_"
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_CGROUP_PARENT = "aihub"  # cgroup v1 + cgroupfs: /aihub/<slug> per attempt (for OOM evidence)
#: seconds an ended container waits for others to be cleaned up with it (one inspect and one rm per batch)
CLEAN_DELAY = 2.0
_STOP_MARGIN = 30.0  # seconds past the grace period for the engine's stop to return
_OUTPUT_CAP = 64 * 1024**3  # most bytes copied out for one path output
_RFC3339 = re.compile(
    r"(?P<base>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<frac>\d+))?(?P<zone>Z|[+-]\d\d:\d\d)?"
)


# attached clients still running when their executor was closed: kept (no ResourceWarning), reaped later
_orphans: set[subprocess.Popen[bytes]] = set()


class _LaunchError(Exception):
    """The attempt cannot start: it fails with this message (no container is left behind)."""


def find_engine_cli(choice: str) -> tuple[str, str]:
    """(engine name, absolute CLI path) for ``auto|podman|docker``; raises RuntimeError when missing."""
    names = ["podman", "docker"] if choice == "auto" else [choice]
    for name in names:
        cli = shutil.which(name)
        if cli is not None:
            return name, cli
    wanted = "podman or docker" if choice == "auto" else choice
    raise RuntimeError(f"AIHUB_EXECUTOR=container: no container engine found ({wanted} is not installed)")


def container_name(key: JobKey, instance: str) -> str:
    """``aihub-r{run}-{node}-a{attempt}-{instance}``: the Kubernetes pod name (DNS-safe, unique per attempt) and
    the installation's mark, so two installations (data dirs) on one engine never take each other's names."""
    return f"{pod_name(key)}-{instance}"


def _key_label(key: JobKey) -> str:
    return json.dumps({"run_id": key.run_id, "node": key.node, "attempt": key.attempt}, sort_keys=True)


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
        self.insecure_registries = [r for r in insecure_registries if r]
        self.keep_containers = keep_containers
        self.engine = ""
        self.cli = ""
        self._cgroup_v1 = False
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._waits = SharedWaits()
        self._pending: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {}  # ended, to clean up
        self._cleaner: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()  # settle(): clean up now, without the batching delay
        self._host = socket.gethostname()

    # ------------------------------------------------------------------------------------- lifecycle
    async def probe(self) -> None:
        """Find the engine's CLI and check that it answers (``info``)."""
        if self.cli:
            return
        engine, cli = find_engine_cli(self.engine_choice)
        proc = await self._run([cli, "info", "--format", "{{json .}}"], within=120, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"AIHUB_EXECUTOR=container: `{engine} info` failed: {_tail(proc.stderr)}")
        self.engine, self.cli = engine, cli
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
        await self._engine("version", within=30)

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
        self._hurry.set()
        try:
            while self._cleaner is not None and not self._cleaner.done():
                await asyncio.gather(self._cleaner, return_exceptions=True)
        finally:
            self._hurry.clear()

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
        name = data["container"]
        try:
            argv = self._create_argv(job, scratch, data)
            created = await self._run(argv, within=None, check=False)
            if created.returncode != 0:
                raise _LaunchError(f"{self.engine} could not create the container: {_tail(created.stderr)}")
            await self._copy_inputs(job, scratch, name)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            proc = await asyncio.to_thread(self._attach, name, log_path, scratch)
        except _LaunchError as exc:
            await self._remove(name)
            return await asyncio.to_thread(_fail_launch, scratch, data, str(exc))
        self._children[job.key.slug] = proc
        data["pid"], data["start_time"] = proc.pid, _start_time(proc.pid)
        await asyncio.to_thread(write_json, scratch / "meta.json", data)
        return Handle(self.name, job.key.slug, data)

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

    def _create_argv(self, job: Job, scratch: Path, data: dict[str, Any]) -> list[str]:
        if not job.argv:
            raise _LaunchError("nothing to run: the command is empty")
        key = job.key
        argv = [self.cli, "create", "--name", data["container"]]
        labels = {k: v for k, v in job.labels.items() if k not in (LABEL_RUN, LABEL_NODE, LABEL_ATTEMPT)}
        labels.update(
            {
                LABEL_RUN: str(key.run_id),
                LABEL_NODE: label_value(key.node),
                LABEL_ATTEMPT: str(key.attempt),
                LABEL_KEY: _key_label(key),
                LABEL_INSTANCE: self.instance,
            }
        )
        for label, value in labels.items():
            argv += ["--label", f"{label}={value}"]
        argv += ["--network", self.network, "--env-file", str(scratch / "env")]
        argv += self._env_args(job, scratch)
        argv += ["--volume", f"{scratch / 'workflow_space'}:{WORKFLOW_SPACE}"]
        for storage in job.storages:
            source = Path(storage.host_path or storage.path)
            target = _checked_path(storage.path, f"storage '{storage.name}'")
            if not source.exists():
                raise _LaunchError(f"storage '{storage.name}': {source} does not exist on this host")
            argv += ["--volume", f"{source}:{target}:{'ro' if storage.read_only else 'rw'}"]
        res = job.resources
        argv += ["--memory", f"{res.memory_mib}m", "--memory-swap", f"{res.memory_mib}m"]
        if res.cpu_millis > 0:
            argv += ["--cpus", f"{res.cpu_millis / 1000:g}"]
        argv += self._gpu_args(res.gpu, res.gpu_devices)
        if data["cgroup_parent"]:
            argv += ["--cgroup-parent", data["cgroup_parent"]]
        if job.workdir:
            workdir = "/" if posixpath.normpath(job.workdir) in ("/", "//") else job.workdir
            argv += ["--workdir", workdir if workdir == "/" else _checked_path(workdir, "working directory")]
        if self.engine == "podman" and self._insecure(data["image"]):
            argv.append("--tls-verify=false")
        entrypoint = json.dumps([job.argv[0]]) if self.engine == "podman" else job.argv[0]
        argv += ["--entrypoint", entrypoint, data["image"], *job.argv[1:]]
        return argv

    def _env_args(self, job: Job, scratch: Path) -> list[str]:
        """Writes the env file (values stay out of process listings); a value an env file cannot hold (a line
        break) goes on the command line instead."""
        lines, extra = [], []
        for name, value in job.env.items():
            if name.upper().startswith(RESERVED_ENV_PREFIX):
                raise _LaunchError(f"environment variable {name}: names starting with _AIHUB_ are reserved")
            if not name or "=" in name or "\0" in name or "\0" in value or any(c.isspace() for c in name):
                raise _LaunchError(f"environment variable {name!r}: invalid name or value")
            if "\n" in value or "\r" in value:
                extra += ["--env", f"{name}={value}"]
            else:
                lines.append(f"{name}={value}\n")
        fd = os.open(scratch / "env", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.writelines(lines)
        return extra

    def _gpu_args(self, count: int, devices: Sequence[str]) -> list[str]:
        if count <= 0:
            return []
        found = _host_gpus()
        if not found:
            raise _LaunchError(
                f"the node asks for {count} GPU(s) but this host has none (no /dev/nvidia* device, no CDI "
                "specification in /etc/cdi or /var/run/cdi)"
            )
        ids = list(devices) or [str(i) for i in range(count)]
        if self.engine == "docker":
            return ["--gpus", f'"device={",".join(ids)}"']
        return [arg for i in ids for arg in ("--device", f"nvidia.com/gpu={i}")]

    def _insecure(self, image: str) -> bool:
        host = image.split("/", 1)[0] if "/" in image else ""
        return bool(host) and host in self.insecure_registries

    async def _copy_inputs(self, job: Job, scratch: Path, name: str) -> None:
        """Unpack every input artifact on the host, then hand them to the created container as one tar stream
        extracted at its root (parent directories are created as needed)."""
        if not job.artifacts_in:
            return
        staging = scratch / "in"
        entries: list[tuple[Path, str]] = []
        for i, art in enumerate(job.artifacts_in):
            target = _checked_path(art.path, f"input '{art.name}'")
            place = staging / str(i) / posixpath.basename(target)
            try:
                async with self.artifacts.open(art.digest) as archive:
                    try:
                        await asyncio.to_thread(unpack, archive, place)
                    except (ArtifactError, OSError) as exc:
                        raise _LaunchError(f"input '{art.name}': cannot unpack it: {exc}") from exc
            except (ArtifactMissing, StoreError) as exc:
                raise _LaunchError(f"input '{art.name}': {exc}") from None
            if target.startswith(WORKFLOW_SPACE + "/"):  # the attempt's own directory: straight there
                dest = scratch / "workflow_space" / target.removeprefix(WORKFLOW_SPACE + "/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                await asyncio.to_thread(os.replace, place, dest)
                continue
            entries.append((place, target.lstrip("/")))
        if entries:
            bundle = staging / "inputs.tar"
            await asyncio.to_thread(_write_tar, bundle, entries)
            stream = await asyncio.to_thread(open, bundle, "rb")
            with stream:
                copied = await self._run(
                    [self.cli, "cp", "-", f"{name}:/"], stdin=stream, within=None, check=False
                )
            if copied.returncode != 0:
                raise _LaunchError(f"cannot copy the inputs into the container: {_tail(copied.stderr)}")
        await asyncio.to_thread(shutil.rmtree, staging, True)

    def _attach(self, name: str, log_path: Path, scratch: Path) -> subprocess.Popen[bytes]:
        """``start --attach``, its output appended to the log; its own session, so a server's end leaves it.
        It runs in the scratch dir: conmon (started by it) writes its ``oom`` file into its working directory."""
        with open(log_path, "ab") as out:
            return subprocess.Popen(
                [self.cli, "start", "--attach", name],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                cwd=scratch,
            )

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
        listed = await self._engine(
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
        name = data["container"]
        child = self._children.get(handle.id)
        code: int | None = None  # the container's exit code, as our attached client returned it
        if child is not None:
            await _child_ended(child)
            self._children.pop(handle.id, None)
            code = child.returncode
        else:  # re-attached after a restart: the engine tells when it ends
            writer_alive = _alive(data.get("pid"), data.get("start_time"))
            await self._engine("wait", name, within=None, check=False)
            if writer_alive:  # the client of the previous server is still writing the log: let it finish
                await _until_gone(data.get("pid"), data.get("start_time"), 10.0)
            else:
                await self._rebuild_log(data)
        # an ordinary exit code from our own client says all the report needs: no inspect on the hand-off path
        # (it runs in the background for the container tab); stopped, killed or failed to start: inspect now
        ordinary = code is not None and 0 <= code <= 124 and not (scratch / "stop").exists()
        state = None if ordinary else await self._inspect(name)
        report = await self._report(data, state, code if ordinary else None)
        await asyncio.to_thread(write_json, scratch / "report.json", report.to_json())
        self._clean_later(data, state)
        return report

    async def _report(
        self, data: dict[str, Any], inspected: dict[str, Any] | None, code: int | None = None
    ) -> ExitReport:
        """The report from the engine's inspect data, or from ``code`` alone (an ordinary exit)."""
        scratch = Path(data["scratch"])
        stopped = (scratch / "stop").exists()
        report = ExitReport(None, started_at=datetime.fromisoformat(data["started_at"]), stopped=stopped)
        if inspected is None and code is not None:
            report.exit_code, report.finished_at = code, datetime.now(UTC)
            if code == 0 and data["outputs"]:
                report.outputs, report.error = await self._collect(data)
            return report
        if inspected is None:
            report.error = "the container vanished (removed outside AIHub, or the engine's storage was reset)"
            report.finished_at = datetime.now(UTC)
            return report
        state = inspected.get("State") or {}
        report.finished_at = _time(state.get("FinishedAt")) or datetime.now(UTC)
        report.started_at = _time(state.get("StartedAt")) or report.started_at
        code = state.get("ExitCode")
        report.exit_code = int(code) if isinstance(code, int) else None
        if state.get("Error"):
            report.error = f"the container did not start: {state['Error']}"
        elif not stopped and self._out_of_memory(data, state):
            report.error = (
                f"out of memory: the container was killed at its memory limit of {data['memory_mib']} MiB "
                "(the task type's memory); choose a task type with more memory"
            )
            _append_log(data, report.error)
        elif report.exit_code == 0 and not stopped and data["outputs"]:
            report.outputs, report.error = await self._collect(data)
        return report

    def _out_of_memory(self, data: dict[str, Any], state: dict[str, Any]) -> bool:
        if state.get("OOMKilled") or (Path(data["scratch"]) / "oom").exists():  # (conmon's own note)
            return True
        if state.get("ExitCode") != 128 + signal.SIGKILL or not data.get("cgroup_parent"):
            return False
        peak = _read_int(
            _CGROUP_ROOT / "memory" / data["cgroup_parent"].lstrip("/") / "memory.max_usage_in_bytes"
        )
        return peak is not None and peak >= int(data["memory_mib"]) * 1024 * 1024

    async def _collect(self, data: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
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
            await self._copy_out(data["container"], path, dest)
        decls = [OutputDecl(**o) for o in data["outputs"]]

        def resolve(node_path: str) -> Path:
            return staged.get(node_path, out_root / "missing")

        try:
            return await collect_outputs(decls, resolve, self.artifacts, data["max_text"], tmp_dir=scratch)
        finally:
            await asyncio.to_thread(shutil.rmtree, out_root, True)

    async def _copy_out(self, name: str, path: str, dest: Path) -> None:
        """``cp CTR:PATH -`` (a tar stream) unpacked under ``dest``; a missing path leaves nothing there."""
        proc = await asyncio.create_subprocess_exec(
            self.cli,
            "cp",
            f"{name}:{path}",
            "-",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        with tempfile.TemporaryFile(dir=dest) as spool:
            size = 0
            while chunk := await proc.stdout.read(1 << 20):
                size += len(chunk)
                if size > _OUTPUT_CAP:
                    proc.kill()
                    break
                spool.write(chunk)
            await proc.wait()
            if proc.returncode != 0 or size > _OUTPUT_CAP:
                return
            spool.seek(0)
            await asyncio.to_thread(_extract_tar, spool, dest)

    async def _rebuild_log(self, data: dict[str, Any]) -> None:
        """The log writer died with the previous server: the node's part of the log, again, from the engine."""
        proc = await self._run([self.cli, "logs", data["container"]], within=None, check=False, merge=True)
        if proc.returncode == 0:
            await asyncio.to_thread(
                _replace_node_log, Path(data["log"]), int(data.get("log_offset", 0)), proc.stdout
            )

    # ------------------------------------------------------------------------------------------ stop
    async def stop(self, handle: Handle, grace: float) -> None:
        """The engine's stop: SIGTERM, then SIGKILL after ``grace`` seconds; returns once it ended."""
        data = handle.data
        scratch = Path(data["scratch"])
        if (scratch / "report.json").exists() or (scratch / "exit").exists():
            return
        (scratch / "stop").touch()
        seconds = max(math.ceil(grace), 0)
        stopped = await self._engine(
            "stop", "-t", str(seconds), data["container"], within=grace + _STOP_MARGIN, check=False
        )
        if stopped.returncode != 0:
            log.warning("container executor: stop of %s: %s", data["container"], _tail(stopped.stderr))

    # -------------------------------------------------------------------------------------- describe
    async def describe(self, handle: Handle) -> dict[str, Any]:
        data = handle.data
        scratch = Path(data["scratch"])
        inspected = await self._inspect(data["container"]) if not data.get("error") else None
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
            text.update(_inspect_view(inspected))
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
        proc = await self._engine(*args, within=60, check=False)
        events = []
        for line in proc.stdout.splitlines():
            with contextlib.suppress(ValueError):
                events.append(_event_json(json.loads(line)))
        return events

    # --------------------------------------------------------------------------------------- helpers
    async def _inspect(self, name: str) -> dict[str, Any] | None:
        proc = await self._engine("container", "inspect", name, check=False, within=60)
        if proc.returncode != 0:
            return None
        try:
            found = json.loads(proc.stdout)
        except ValueError:
            return None
        return found[0] if isinstance(found, list) and found else None

    def _clean_later(self, data: dict[str, Any], state: dict[str, Any] | None) -> None:
        """Queue an ended attempt's clean-up. Clean-ups run in batches, ``CLEAN_DELAY`` seconds after the first
        of a batch ended: one ``inspect`` and one ``rm`` for all of them, so the engine's CLI does not compete
        with the next nodes' starts once per node (on two cores that was a third of a node's time)."""
        self._pending[data["container"]] = (data, state)
        if self._cleaner is None or self._cleaner.done():
            self._cleaner = asyncio.create_task(self._clean_batches(), name="remove ended containers")

    async def _clean_batches(self) -> None:
        while self._pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), CLEAN_DELAY)
            batch, self._pending = self._pending, {}
            await self._clean(batch)

    async def _clean(self, batch: dict[str, tuple[dict[str, Any], dict[str, Any] | None]]) -> None:
        """After the end: keep the inspect data (the container tab's), remove the containers and their cgroup
        parents. The engine keeps the events of removed containers: the events tab asks it when shown."""
        try:
            inspected = await self._inspect_many(
                [name for name, (_, state) in batch.items() if state is None]
            )
            for name, (data, state) in batch.items():
                state = state or inspected.get(name)
                if state is not None:
                    await asyncio.to_thread(write_json, Path(data["scratch"]) / "inspect.json", state)
            if not self.keep_containers:
                await self._engine("rm", "-f", "-v", *batch, check=False, within=300)
            for data, _ in batch.values():
                if data.get("cgroup_parent"):
                    await asyncio.to_thread(_remove_cgroup, data["cgroup_parent"])
                await asyncio.to_thread(shutil.rmtree, Path(data["scratch"]) / "workflow_space", True)
        except Exception:  # cleaning is best effort; the reports are saved already
            log.exception("container executor: cleaning up %s failed", ", ".join(batch))

    async def _inspect_many(self, names: list[str]) -> dict[str, dict[str, Any]]:
        if not names:
            return {}
        proc = await self._engine("container", "inspect", *names, check=False, within=120)
        try:
            found = json.loads(proc.stdout or "[]")
        except ValueError:
            return {}
        return {str(c.get("Name", "")).lstrip("/"): c for c in found if isinstance(c, dict)}

    async def _remove(self, name: str) -> None:
        await self._engine("rm", "-f", "-v", name, check=False, within=120)

    async def _engine(
        self, *args: str, within: float | None = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return await self._run([self.cli, *args], within=within, check=check)

    async def _run(
        self,
        argv: list[str],
        *,
        within: float | None,
        check: bool,
        stdin: Any = subprocess.DEVNULL,
        merge: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge else subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(within):
                out, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"`{' '.join(argv[:3])} ...` did not answer within {within} s") from None
        result = subprocess.CompletedProcess(
            argv, proc.returncode or 0, out.decode(errors="replace"), (err or b"").decode(errors="replace")
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"`{' '.join(argv[:3])} ...` failed: {_tail(result.stderr)}")
        return result


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
    _append_log(data, message)
    (scratch / "exit").write_text(f"error: {message}\n")
    data["error"] = message
    key = data["key"]
    return Handle(ContainerExecutor.name, JobKey(key["run_id"], key["node"], key["attempt"]).slug, data)


def _append_log(data: dict[str, Any], message: str) -> None:
    with contextlib.suppress(OSError, KeyError), open(data["log"], "a") as f:
        f.write(f"aihub: {message}\n")


def _replace_node_log(path: Path, offset: int, text: str) -> None:
    with open(path, "r+b" if path.exists() else "wb") as f:
        f.truncate(offset)
        f.seek(offset)
        f.write(text.encode())


def _write_tar(bundle: Path, entries: list[tuple[Path, str]]) -> None:
    with tarfile.open(bundle, "w") as tar:
        for source, arcname in entries:
            tar.add(source, arcname=arcname)


def _extract_tar(stream: Any, dest: Path) -> None:
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        tar.extractall(dest, filter="data")


def _checked_path(path: str, what: str) -> str:
    if not path.startswith("/"):
        raise _LaunchError(f"{what}: {path!r} is not an absolute path")
    if any(ord(c) < 32 or ord(c) == 127 for c in path) or ":" in path or "," in path:
        raise _LaunchError(f"{what}: {path!r} contains a control character, ':' or ','")
    normal = "/" + posixpath.normpath(path).lstrip("/")
    if normal == "/":
        raise _LaunchError(f"{what}: the root directory cannot be used")
    return normal


def _host_gpus() -> list[str]:
    found = [str(p) for p in Path("/dev").glob("nvidia[0-9]*")]
    for spec_dir in (Path("/etc/cdi"), Path("/var/run/cdi")):
        with contextlib.suppress(OSError):
            found += [str(p) for p in spec_dir.iterdir() if p.suffix in (".json", ".yaml")]
    return found


def _inspect_view(inspected: dict[str, Any]) -> dict[str, Any]:
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


def _event_json(event: dict[str, Any]) -> dict[str, Any]:
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


def _remove_cgroup(parent: str) -> None:
    """rmdir the attempt's cgroup parent (and the ``conmon`` group podman made in it) in every hierarchy."""
    rel = parent.lstrip("/")
    with contextlib.suppress(OSError):
        for hierarchy in _CGROUP_ROOT.iterdir():
            base = hierarchy / rel
            if not base.is_dir():
                continue
            for sub in sorted(base.glob("**/"), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    sub.rmdir()


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _time(value: str | None) -> datetime | None:
    """An engine's RFC 3339 time (nanoseconds, ``Z`` or an offset) as an aware datetime; None when unset."""
    match = _RFC3339.match(value or "")
    if match is None or value is None or value.startswith("0001-"):
        return None
    when = datetime.fromisoformat(match["base"] + (match["zone"] or "+00:00").replace("Z", "+00:00"))
    return when.replace(microsecond=int((match["frac"] or "0")[:6].ljust(6, "0"))).astimezone(UTC)


def _tail(text: str, limit: int = 500) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


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


async def _child_ended(child: subprocess.Popen[bytes]) -> None:
    """Wait for our attached client without a blocked thread (a pidfd; else polling), then reap it."""
    try:
        fd = os.pidfd_open(child.pid)
    except (AttributeError, OSError):
        delay = 0.005
        while child.poll() is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        return
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        if child.poll() is None:
            await ready
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    child.wait()


async def _until_gone(pid: int | None, start_time: int | None, within: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            delay = 0.01
            while _alive(pid, start_time):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)
