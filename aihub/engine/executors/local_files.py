"""An attempt's files, made before its supervisor starts: the scratch dir and ``meta.json``, the node's private
``/tmp`` (with an empty ``workflow_space``) and working dir, its input artifacts unpacked where it expects them,
the binds that show it its storages and hide the data dir, and its environment.

Because a node's ``/tmp`` is a directory of the host, :func:`host_path` is the one mapping from a node-visible
path to the host (:func:`node_realpath` first follows the node's symlinks as the node would); outputs are
collected through the same mapping after the exit (:func:`resolver`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import posixpath
import shutil
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aihub.engine.artifacts import ArtifactError, unpack
from aihub.engine.executors.base import Job, Resources, StorageMount
from aihub.engine.executors.launcher import make_private_tmp
from aihub.engine.executors.local_supervisors import WORKFLOW_SPACE, Bind, Supervisors, _base_env
from aihub.storage.base import ArtifactMissing, ArtifactStore, LogStore, StoreError

RESERVED_ENV_PREFIX = "_aihub_"
PUBLIC_MOUNTS = "/opt/aihub"  # where storages from hidden directories are shown to nodes
#: the log's first line for a node that names an image (the details page says the same)
IMAGE_NOT_USED = (
    "the local executor runs this node on this host with its own tools; its image is not used "
    "(AIHUB_EXECUTOR=container runs nodes in their images)"
)
_MAX_SYMLINKS = 40
SPARE_DIR = ".spare"  # in the work root: attempts' scratch dirs made ahead, per process (see AttemptFiles)
SPARES = 4  # kept ready: enough for the hand-offs of a few slots between two refills

Storages = Sequence[tuple[str, str]]  # (node path, host path), as kept in handles


class _LaunchError(Exception):
    """The attempt cannot start (bad input artifact, missing storage, ...): it fails with this message."""


class AttemptFiles:
    """Prepares attempts' files under ``work_root`` for supervisors started the way ``sup`` says.

    An isolated attempt's scratch dir (with its private ``tmp``, 1777, and the node user's empty
    ``workflow_space``) is made ahead, off the hand-off path: a few *spares* wait in ``work_root/.spare/`` and a
    start renames one into place (one rename(2) instead of three mkdir(2), a chmod and a chown, each of which
    costs on a loaded disk); a background thread makes the next. Without a spare (the first starts, a burst)
    the start makes the dirs itself. For the launcher's warm sandboxes the server makes none: each sandbox makes
    its next one itself between two nodes, in ``spare_dir`` (see launcher.py)."""

    def __init__(self, work_root: Path, artifacts: ArtifactStore, logs: LogStore, sup: Supervisors) -> None:
        self.work_root = work_root
        self.artifacts = artifacts
        self.logs = logs
        self.sup = sup
        # this executor's own (another server on the same data dir, or another executor of this process — engine
        # workers side by side — keeps its own): <pid>-<start time>-<random>
        self.spare_dir = work_root / SPARE_DIR / f"{_process_tag(os.getpid())}-{uuid.uuid4().hex[:8]}"
        self._spares: list[Path] = []  # ready, for the current isolation and node user
        self._spare_lock = threading.Lock()  # (starts and refills run in worker threads)
        self._making = 0  # spares being made
        self._outside_tmp: list[Path] | None = None
        self._known_dirs: set[Path] = set()  # private paths found to be directories (see _hidden_dirs)

    # --------------------------------------------------------------------------------------- spares
    def reset_spares(self) -> None:
        """Forget and remove this executor's spares (at probe they were made for another isolation; at close
        they are no longer needed), and those of servers that are gone. Blocking: call it in a worker
        thread."""
        with self._spare_lock:
            self._spares.clear()
        shutil.rmtree(self.spare_dir, ignore_errors=True)
        with contextlib.suppress(OSError), os.scandir(self.spare_dir.parent) as entries:
            for entry in entries:
                pid, _, _ = entry.name.partition("-")
                alive = pid.isdigit() and entry.name.startswith(f"{_process_tag(int(pid))}-")
                if not alive:  # (gone, or its pid reused)
                    shutil.rmtree(entry.path, ignore_errors=True)

    def spares_wanted(self) -> int:
        """How many spares to make now (each through :meth:`make_spare`)."""
        if not self.sup.isolated or self.sup.sandboxes:  # (a sandbox makes its own: see spare_for_launcher)
            return 0
        with self._spare_lock:
            wanted = max(SPARES - len(self._spares) - self._making, 0)
            self._making += wanted
            return wanted

    def make_spare(self) -> None:
        """Make one spare (blocking: in a worker thread); an error only means one spare less."""
        try:
            self.spare_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            spare = self.spare_dir / uuid.uuid4().hex
            spare.mkdir(mode=0o700)
            self._make_tmp(spare)
        except OSError:
            spare = None
        with self._spare_lock:
            self._making -= 1
            if spare is not None:
                self._spares.append(spare)

    def _take_spare(self, scratch: Path) -> bool:
        """Rename a spare to ``scratch``; False when there is none (or the rename failed)."""
        with self._spare_lock:
            if not self._spares:
                return False
            spare = self._spares.pop()
        try:
            os.rename(spare, scratch)
        except OSError:
            shutil.rmtree(spare, ignore_errors=True)
            return False
        return True

    def _make_tmp(self, scratch: Path) -> None:
        make_private_tmp(str(scratch), self.sup.node_user)  # (as a warm sandbox makes its own)

    def out_of_private_paths(self, job: Job) -> Job:
        """A storage seen at its own host path inside a hidden directory (the local build of a module, under
        the data dir) is mounted at ``/opt/aihub/<name>`` instead, and the node's argv and working dir that
        point into it follow: what is hidden stays hidden, and the node user can reach it whatever the
        permissions of the directories above the data dir (``/root`` is 0700)."""
        if not self.sup.isolated or not self.sup.private_paths:
            return job
        argv, workdir, storages = list(job.argv), job.workdir, []
        for storage in job.storages:
            source = Path(storage.host_path or storage.path)
            inside = any(source.is_relative_to(p) for p in self.sup.private_paths)
            if not inside or posixpath.normpath(storage.path) != str(source):
                storages.append(storage)
                continue
            seen = f"{PUBLIC_MOUNTS}/{storage.name}"
            storages.append(dataclasses.replace(storage, path=seen, host_path=str(source)))
            argv = [_rebase(part, str(source), seen) for part in argv]
            workdir = _rebase(workdir, str(source), seen)
        return dataclasses.replace(job, argv=argv, workdir=workdir, storages=storages)

    def prepare_attempt(self, job: Job, scratch: Path) -> tuple[Path, dict[str, Any]]:
        log_path = self.logs.path(job.key.run_id, job.key.node, job.key.attempt)
        data = self._prepare_scratch(job, scratch, log_path)
        # said where the user looks: the node does not run in its image here (a module's local build stands for
        # its image, and runs)
        if job.image and not any(s.name == "module-build" for s in job.storages):
            _append_log(data, f"{IMAGE_NOT_USED} (image {job.image})")
        return log_path, data

    async def prepare(
        self, job: Job, scratch: Path
    ) -> tuple[Path, dict[str, Any], Path | dict[str, Any] | None]:
        """(log path, meta data, spare): the attempt's files made in a worker thread (no spare), or left to
        the launcher (see :meth:`spare_for_launcher`)."""
        if prepared := self.spare_for_launcher(job, scratch):
            return prepared
        log_path, data = await asyncio.to_thread(self.prepare_attempt, job, scratch)
        return log_path, data, None

    def ensure_meta(self, scratch: Path, data: dict[str, Any]) -> None:
        """The scratch dir, ``meta.json`` and log directory of an attempt whose launch failed before the
        launcher put them in place, so that ``wait`` and ``find`` see its failure, and its log says why."""
        if not (scratch / "meta.json").exists():
            scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
            (scratch / "meta.json").write_text(json.dumps(data))
            Path(data["log"]).parent.mkdir(parents=True, exist_ok=True)

    def spare_for_launcher(
        self, job: Job, scratch: Path
    ) -> tuple[Path, dict[str, Any], Path | dict[str, Any]] | None:
        """(log path, meta data, spare) when the launcher can make this attempt's files itself — rename the spare
        into place, or, in a warm sandbox, make the scratch dir (from one the sandbox made ahead in
        ``spare_dir``, between two nodes: the server makes no spares then); and write ``meta.json``, in its own
        process, so the start makes no trip to a worker thread — because the start has no other file work in
        the scratch dir (no input to unpack, the default working dir, no storage under /tmp, no image line for
        the log); else None (:meth:`prepare_attempt`)."""
        if (
            self.sup.launcher is None
            or job.artifacts_in
            or job.image
            or (job.workdir or WORKFLOW_SPACE) != WORKFLOW_SPACE
            or any(_relative_to(posixpath.normpath(s.path), "/tmp") is not None for s in job.storages)
        ):
            return None
        spare: Path | dict[str, Any]
        if self.sup.sandboxes:
            spare = {"spares": str(self.spare_dir), "owner": self.sup.node_user}
        else:
            with self._spare_lock:
                if not self._spares:
                    return None
                spare = self._spares.pop()
        # (no file-system call here: the launcher makes the log's directory)
        log_path = self.logs.location(job.key.run_id, job.key.node, job.key.attempt)
        return log_path, self._meta(job, scratch, log_path), spare

    def _prepare_scratch(self, job: Job, scratch: Path, log_path: Path) -> dict[str, Any]:
        """Create the scratch dir and write ``meta.json``: everything a later ``find`` needs."""
        # Every file operation counts (a loaded disk makes each one cost): without isolation the attempt
        # needs nothing but the scratch dir itself; with it, a spare holds the rest.
        if not (self.sup.isolated and self._take_spare(scratch)):
            scratch.mkdir(mode=0o700, parents=True)
            if self.sup.isolated:
                self._make_tmp(scratch)
        data = self._meta(job, scratch, log_path)
        (scratch / "meta.json").write_text(json.dumps(data))  # a fresh dir: no reader sees it half-written
        return data

    def _meta(self, job: Job, scratch: Path, log_path: Path) -> dict[str, Any]:
        """What ``meta.json`` holds: everything a later ``find`` needs."""
        storages = [(posixpath.normpath(s.path), s.host_path or s.path) for s in job.storages]
        return {
            "scratch": str(scratch),
            "log": str(log_path),
            "key": {"run_id": job.key.run_id, "node": job.key.node, "attempt": job.key.attempt},
            "isolated": self.sup.isolated,
            "isolation": self.sup.isolation_text(job),
            "storages": storages if self.sup.isolated else [],
            "outputs": [{"name": o.name, "path": o.path, "type": o.type} for o in job.outputs],
            "max_text": job.max_text_output,
            "argv": list(job.argv),
            "env_names": sorted(job.env),
            "workdir": job.workdir or WORKFLOW_SPACE,
            "image": job.image,
            "resources": _resources_json(job.resources),
            "labels": dict(job.labels),
            "started_at": datetime.now(UTC).isoformat(),
            "pid": None,
            "start_time": None,
        }

    async def prepare_filesystem(self, job: Job, scratch: Path, data: dict[str, Any]) -> list[Bind]:
        """Check storages, create mount points and the workdir, unpack input artifacts; returns the binds."""
        if not job.argv:
            raise _LaunchError("nothing to run: the command is empty")
        if self.sup.isolated:
            binds = self._binds(job, scratch)
        else:
            binds = []
            self._check_storages_without_isolation(job)
            _ensure_workflow_space()
        resolve = resolver(data)
        for art in job.artifacts_in:
            try:
                async with self.artifacts.open(art.digest) as archive:
                    try:
                        target = resolve(art.path)
                        await asyncio.to_thread(unpack, archive, target)
                        await asyncio.to_thread(self._give_to_node, scratch, target)
                    except (ArtifactError, OSError, ValueError) as exc:
                        raise _LaunchError(
                            f"input '{art.name}': cannot unpack it at {art.path}: {exc}"
                        ) from exc
            except (ArtifactMissing, StoreError) as exc:
                raise _LaunchError(f"input '{art.name}': {exc}") from None
        if data["workdir"] != WORKFLOW_SPACE:
            try:
                workdir = resolve(data["workdir"])
                workdir.mkdir(parents=True, exist_ok=True)
                await asyncio.to_thread(self._give_to_node, scratch, workdir)
            except (OSError, ValueError) as exc:
                raise _LaunchError(f"working directory {data['workdir']}: {exc}") from exc
        return binds

    def _give_to_node(self, scratch: Path, path: Path) -> None:
        """Make what the executor put in the node's private /tmp the node user's, as if it had made it."""
        tmp = scratch / "tmp"
        if self.sup.node_user is None or not path.is_relative_to(tmp):
            return
        uid, gid = self.sup.node_user
        for parent in reversed(path.relative_to(tmp).parents[:-1]):  # the dirs made on the way
            os.chown(tmp / parent, uid, gid, follow_symlinks=False)
        os.chown(path, uid, gid, follow_symlinks=False)
        if path.is_dir() and not path.is_symlink():
            for root, dirs, files in os.walk(path):
                for name in (*dirs, *files):
                    os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)

    def _binds(self, job: Job, scratch: Path) -> list[Bind]:
        """The storages (parents first; those under /tmp are bound inside ``<scratch>/tmp``), then the
        private /tmp itself, recursively, so it carries them along."""
        binds: list[Bind] = []
        mounted: list[tuple[str, str]] = []
        for storage in sorted(job.storages, key=lambda s: posixpath.normpath(s.path)):
            source = _storage_source(storage)
            target = posixpath.normpath(storage.path)
            # the directory to bind onto, as the host sees it: inside /tmp or inside an earlier storage's source
            made = host_path(scratch, target, True, mounted)
            mounted.append((target, str(source)))
            try:
                if source.is_dir():
                    made.mkdir(parents=True, exist_ok=True)
                else:
                    made.parent.mkdir(parents=True, exist_ok=True)
                    made.touch(exist_ok=True)
            except OSError as exc:
                raise _LaunchError(f"storage '{storage.name}': cannot create {target}: {exc}") from exc
            # bound at its path as the namespace sees it by then: one inside an earlier storage lands on that
            # storage's mount (at the earlier storage's source it would be under the mount, out of sight)
            mountpoint = host_path(scratch, target, True)
            binds.append((str(source), str(mountpoint), "ro" if storage.read_only else "rw"))
        binds.append((str(scratch / "tmp"), "/tmp", "tree"))
        empty = str(self.work_root / ".empty")
        # (one under /tmp is out of sight already, and could not be found once the private /tmp is in place)
        binds.extend((empty, str(path), "ro") for path in self._hidden_dirs())
        return binds

    def _hidden_dirs(self) -> list[Path]:
        """The private dirs not under /tmp (where the private /tmp hides them), one holding the work root last
        (the empty dir bound onto each is in it). One found to be a directory (the server's own) is taken to
        stay one: no ``stat`` on the event loop; one not there yet is looked for again at each start."""
        if self._outside_tmp is None:
            outside = [p for p in self.sup.private_paths if not p.is_relative_to("/tmp")]
            self._outside_tmp = sorted(outside, key=self.work_root.is_relative_to)  # (stable: False first)
        self._known_dirs.update(p for p in self._outside_tmp if p not in self._known_dirs and p.is_dir())
        return [p for p in self._outside_tmp if p in self._known_dirs]

    def _check_storages_without_isolation(self, job: Job) -> None:
        for storage in job.storages:
            host = posixpath.normpath(_storage_source(storage))
            path = posixpath.normpath(storage.path)
            if host != path:
                raise _LaunchError(
                    f"storage '{storage.name}' is at {host} on this host but nodes expect it at {path}; "
                    f"that needs mount isolation, which is unavailable: {self.sup.isolation_reason}"
                )

    def node_env(self, job: Job, scratch: Path) -> dict[str, str]:
        """Exactly the job's env, plus PATH/HOME/LANG defaults and the GPUs handed out (none by default).

        HOME is private to the attempt: the node's own /tmp/workflow_space, or without isolation the
        attempt's scratch dir (the shared host /tmp/workflow_space would mix attempts).
        """
        for name, value in job.env.items():
            if name.startswith(RESERVED_ENV_PREFIX):
                raise _LaunchError(f"environment variable {name}: names starting with _aihub_ are reserved")
            if not name or "=" in name or "\0" in name or "\0" in value:
                raise _LaunchError(f"environment variable {name!r}: invalid name or value")
        home = WORKFLOW_SPACE if self.sup.isolated else str(scratch)
        env = {**_base_env(home), **job.env}
        env["CUDA_VISIBLE_DEVICES"] = ",".join(job.resources.gpu_devices)
        return env


# --------------------------------------------------------------------------------------------- path mapping


def resolver(data: dict[str, Any]) -> Callable[[str], Path]:
    """node path -> host path for this attempt, following the node's symlinks."""
    scratch = Path(data["scratch"])
    isolated = bool(data["isolated"])
    storages = [(str(node), str(host)) for node, host in data["storages"]]

    def resolve(node_path: str) -> Path:
        real = node_realpath(scratch, node_path, isolated, storages)
        return host_path(scratch, real, isolated, storages)

    return resolve


def host_path(scratch: Path, node_path: str, isolated: bool, storages: Storages = ()) -> Path:
    """Where the node-visible absolute ``node_path`` is on the host (no symlinks followed).

    Isolated: a storage's path maps to its host path, ``/tmp`` to ``<scratch>/tmp``, anything else to the
    same path. Without isolation the node sees the host as it is.
    """
    if not node_path.startswith("/"):
        raise ValueError(f"{node_path!r} is not an absolute path")
    path = posixpath.normpath(node_path)
    path = "/" + path.lstrip("/")  # normpath keeps a leading "//"
    if not isolated:
        return Path(path)
    for mount, host in sorted(storages, key=lambda s: len(s[0]), reverse=True):
        rel = _relative_to(path, mount)
        if rel is not None:
            return Path(host, rel) if rel else Path(host)
    rel = _relative_to(path, "/tmp")
    if rel is not None:
        return scratch / "tmp" / rel if rel else scratch / "tmp"
    return Path(path)


def node_realpath(scratch: Path, node_path: str, isolated: bool, storages: Storages = ()) -> str:
    """``node_path`` with symlinks resolved *as the node sees them* (``/tmp/out -> /tmp/real`` must not
    land on the host's ``/tmp/real``). Components that do not exist are kept as they are."""
    if not isolated:
        return node_path
    todo = [p for p in reversed(node_path.split("/")) if p not in ("", ".")]
    resolved = "/"
    hops = 0
    while todo:
        part = todo.pop()
        if part == "..":
            resolved = posixpath.dirname(resolved)
            continue
        candidate = posixpath.join(resolved, part)
        try:
            target = os.readlink(host_path(scratch, candidate, True, storages))
        except OSError:  # not a symlink, or does not exist
            resolved = candidate
            continue
        hops += 1
        if hops > _MAX_SYMLINKS:
            raise ValueError(f"too many levels of symbolic links in {node_path}")
        todo.extend(p for p in reversed(target.split("/")) if p not in ("", "."))
        if target.startswith("/"):
            resolved = "/"
    return resolved


def _relative_to(path: str, root: str) -> str | None:
    if path == root:
        return ""
    if path.startswith(root.rstrip("/") + "/"):
        return path[len(root.rstrip("/")) + 1 :]
    return None


def _storage_source(storage: StorageMount) -> Path:
    source = Path(storage.host_path or storage.path)
    if not source.exists():
        raise _LaunchError(f"storage '{storage.name}': {source} does not exist on this host")
    return source


def _ensure_workflow_space() -> None:
    path = Path(WORKFLOW_SPACE)
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o1777)


def _process_tag(pid: int) -> str:
    """``PID-START_TIME`` of a running process (its start time guards against a reused pid), or "" when there
    is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return ""
    return f"{pid}-{int(raw[raw.rindex(b')') + 2 :].split()[19])}"


def _resources_json(resources: Resources) -> dict[str, Any]:
    # By hand: dataclasses.asdict's deep copy is a measurable part of a start.
    return {
        **vars(resources),
        "gpu_devices": list(resources.gpu_devices),
        "node_selector": dict(resources.node_selector),
    }


def _append_log(data: dict[str, Any], message: str) -> None:
    """A line of the platform's own in the attempt's log, where users look for what happened."""
    with contextlib.suppress(OSError, KeyError), open(data["log"], "a") as f:
        f.write(f"aihub: {message}\n")


def _rebase(value: str, old: str, new: str) -> str:
    """``value`` with its leading path ``old`` replaced by ``new`` (other values unchanged)."""
    if value == old:
        return new
    return new + value[len(old) :] if value.startswith(old.rstrip("/") + "/") else value
