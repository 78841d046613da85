"""Launching one attempt as a container: ``create``, inputs copied in, ``start --attach``.

The container gets the seed's contract, as on Kubernetes: the image's own filesystem, ``/tmp/workflow_space``
an empty directory of the attempt (bound from its scratch dir), the job's environment (in an env file, so
values stay out of process listings), data storages bound at their paths, the SKU's memory, CPU and GPUs,
and labels (``aihub/run``, ``aihub/node``, ``aihub/attempt``, ``aihub/key``, ``aihub/instance``) that ``find``
looks it up by. Anything that makes the job impossible to launch raises :class:`LaunchError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import posixpath
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aihub.engine.artifacts import ArtifactError, unpack
from aihub.engine.executors.base import Job, JobKey
from aihub.engine.executors.container_cli import EngineCli, tail
from aihub.engine.executors.k8s_pod import LABEL_ATTEMPT, LABEL_NODE, LABEL_RUN, label_value
from aihub.storage.base import ArtifactMissing, ArtifactStore, StoreError

__all__ = ["LABEL_INSTANCE", "LABEL_KEY", "WORKFLOW_SPACE", "LaunchError", "Launcher"]

WORKFLOW_SPACE = "/tmp/workflow_space"
LABEL_KEY = "aihub/key"
LABEL_INSTANCE = "aihub/instance"  # the installation: a hash of its scratch root
RESERVED_ENV_PREFIX = "_AIHUB_"


class LaunchError(Exception):
    """The attempt cannot start: it fails with this message (no container is left behind)."""


class Launcher:
    """Creates an attempt's container, copies its inputs in and starts it (see the module docstring)."""

    def __init__(
        self,
        engine: EngineCli,
        artifacts: ArtifactStore,
        *,
        instance: str,
        network: str,
        insecure_registries: Sequence[str],
    ) -> None:
        self.engine = engine
        self.artifacts = artifacts
        self.instance = instance
        self.network = network
        self.insecure_registries = list(insecure_registries)

    async def create(self, job: Job, scratch: Path, data: dict[str, Any]) -> None:
        argv = self.create_argv(job, scratch, data)
        created = await self.engine.run(argv, within=None, check=False)
        if created.returncode != 0:
            raise LaunchError(f"{self.engine.engine} could not create the container: {tail(created.stderr)}")

    def create_argv(self, job: Job, scratch: Path, data: dict[str, Any]) -> list[str]:
        """``create`` of the attempt's container (written: its env file in the scratch dir)."""
        if not job.argv:
            raise LaunchError("nothing to run: the command is empty")
        argv = [self.engine.cli, "create", "--name", data["container"], *self._label_args(job)]
        argv += ["--network", self.network, "--env-file", str(scratch / "env")]
        argv += _env_args(job, scratch)
        argv += ["--volume", f"{scratch / 'workflow_space'}:{WORKFLOW_SPACE}", *_storage_args(job)]
        argv += self._resource_args(job, data)
        if job.workdir:
            workdir = "/" if posixpath.normpath(job.workdir) in ("/", "//") else job.workdir
            argv += ["--workdir", workdir if workdir == "/" else checked_path(workdir, "working directory")]
        podman = self.engine.engine == "podman"
        if podman and self._insecure(data["image"]):
            argv.append("--tls-verify=false")
        entrypoint = json.dumps([job.argv[0]]) if podman else job.argv[0]
        return [*argv, "--entrypoint", entrypoint, data["image"], *job.argv[1:]]

    def _label_args(self, job: Job) -> list[str]:
        key = job.key
        labels = {k: v for k, v in job.labels.items() if k not in (LABEL_RUN, LABEL_NODE, LABEL_ATTEMPT)}
        labels.update(
            {
                LABEL_RUN: str(key.run_id),
                LABEL_NODE: label_value(key.node),
                LABEL_ATTEMPT: str(key.attempt),
                LABEL_KEY: key_label(key),
                LABEL_INSTANCE: self.instance,
            }
        )
        return [arg for label, value in labels.items() for arg in ("--label", f"{label}={value}")]

    def _resource_args(self, job: Job, data: dict[str, Any]) -> list[str]:
        res = job.resources
        argv = ["--memory", f"{res.memory_mib}m", "--memory-swap", f"{res.memory_mib}m"]
        if res.cpu_millis > 0:
            argv += ["--cpus", f"{res.cpu_millis / 1000:g}"]
        argv += self._gpu_args(res.gpu, res.gpu_devices)
        if data["cgroup_parent"]:
            argv += ["--cgroup-parent", data["cgroup_parent"]]
        return argv

    def _gpu_args(self, count: int, devices: Sequence[str]) -> list[str]:
        if count <= 0:
            return []
        if not _host_gpus():
            raise LaunchError(
                f"the node asks for {count} GPU(s) but this host has none (no /dev/nvidia* device, no CDI "
                "specification in /etc/cdi or /var/run/cdi)"
            )
        ids = list(devices) or [str(i) for i in range(count)]
        if self.engine.engine == "docker":
            return ["--gpus", f'"device={",".join(ids)}"']
        return [arg for i in ids for arg in ("--device", f"nvidia.com/gpu={i}")]

    def _insecure(self, image: str) -> bool:
        host = image.split("/", 1)[0] if "/" in image else ""
        return bool(host) and host in self.insecure_registries

    async def copy_inputs(self, job: Job, scratch: Path, name: str) -> None:
        """Unpack every input artifact on the host, then hand them to the created container as one tar stream
        extracted at its root (parent directories are created as needed)."""
        if not job.artifacts_in:
            return
        staging = scratch / "in"
        entries: list[tuple[Path, str]] = []
        for i, art in enumerate(job.artifacts_in):
            target = checked_path(art.path, f"input '{art.name}'")
            place = staging / str(i) / posixpath.basename(target)
            await self._unpack_input(art.name, art.digest, place)
            if target.startswith(WORKFLOW_SPACE + "/"):  # the attempt's own directory: straight there
                dest = scratch / "workflow_space" / target.removeprefix(WORKFLOW_SPACE + "/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                await asyncio.to_thread(os.replace, place, dest)
                continue
            entries.append((place, target.lstrip("/")))
        if entries:
            await self._copy_in(staging / "inputs.tar", entries, name)
        await asyncio.to_thread(shutil.rmtree, staging, True)

    async def _unpack_input(self, name: str, digest: str, place: Path) -> None:
        try:
            async with self.artifacts.open(digest) as archive:
                try:
                    await asyncio.to_thread(unpack, archive, place)
                except (ArtifactError, OSError) as exc:
                    raise LaunchError(f"input '{name}': cannot unpack it: {exc}") from exc
        except (ArtifactMissing, StoreError) as exc:
            raise LaunchError(f"input '{name}': {exc}") from None

    async def _copy_in(self, bundle: Path, entries: list[tuple[Path, str]], name: str) -> None:
        await asyncio.to_thread(_write_tar, bundle, entries)
        stream = await asyncio.to_thread(open, bundle, "rb")
        with stream:
            copied = await self.engine.run(
                [self.engine.cli, "cp", "-", f"{name}:/"], stdin=stream, within=None, check=False
            )
        if copied.returncode != 0:
            raise LaunchError(f"cannot copy the inputs into the container: {tail(copied.stderr)}")

    def attach(self, name: str, log_path: Path, scratch: Path) -> subprocess.Popen[bytes]:
        """``start --attach``, its output appended to the log; its own session, so a server's end leaves it.
        It runs in the scratch dir: conmon (started by it) writes its ``oom`` file into its working directory."""
        with open(log_path, "ab") as out:
            return subprocess.Popen(
                [self.engine.cli, "start", "--attach", name],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                cwd=scratch,
            )


def key_label(key: JobKey) -> str:
    return json.dumps({"run_id": key.run_id, "node": key.node, "attempt": key.attempt}, sort_keys=True)


def _env_args(job: Job, scratch: Path) -> list[str]:
    """Writes the env file (values stay out of process listings); a value an env file cannot hold (a line
    break) goes on the command line instead."""
    lines, extra = [], []
    for name, value in job.env.items():
        if name.upper().startswith(RESERVED_ENV_PREFIX):
            raise LaunchError(f"environment variable {name}: names starting with _AIHUB_ are reserved")
        if not name or "=" in name or "\0" in name or "\0" in value or any(c.isspace() for c in name):
            raise LaunchError(f"environment variable {name!r}: invalid name or value")
        if "\n" in value or "\r" in value:
            extra += ["--env", f"{name}={value}"]
        else:
            lines.append(f"{name}={value}\n")
    fd = os.open(scratch / "env", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(lines)
    return extra


def _storage_args(job: Job) -> list[str]:
    argv = []
    for storage in job.storages:
        source = Path(storage.host_path or storage.path)
        target = checked_path(storage.path, f"storage '{storage.name}'")
        if not source.exists():
            raise LaunchError(f"storage '{storage.name}': {source} does not exist on this host")
        argv += ["--volume", f"{source}:{target}:{'ro' if storage.read_only else 'rw'}"]
    return argv


def checked_path(path: str, what: str) -> str:
    """An absolute, normalised path a ``--volume`` can name (no control character, ``:`` or ``,``), not ``/``."""
    if not path.startswith("/"):
        raise LaunchError(f"{what}: {path!r} is not an absolute path")
    if any(ord(c) < 32 or ord(c) == 127 for c in path) or ":" in path or "," in path:
        raise LaunchError(f"{what}: {path!r} contains a control character, ':' or ','")
    normal = "/" + posixpath.normpath(path).lstrip("/")
    if normal == "/":
        raise LaunchError(f"{what}: the root directory cannot be used")
    return normal


def _host_gpus() -> list[str]:
    found = [str(p) for p in Path("/dev").glob("nvidia[0-9]*")]
    for spec_dir in (Path("/etc/cdi"), Path("/var/run/cdi")):
        with contextlib.suppress(OSError):
            found += [str(p) for p in spec_dir.iterdir() if p.suffix in (".json", ".yaml")]
    return found


def _write_tar(bundle: Path, entries: list[tuple[Path, str]]) -> None:
    with tarfile.open(bundle, "w") as tar:
        for source, arcname in entries:
            tar.add(source, arcname=arcname)
