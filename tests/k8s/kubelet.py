"""A simulated kubelet: runs the pods stored in the emulator as processes on this host.

It does what a kubelet does, as far as the executor can tell: schedules the pod on its node (``nodeName``,
``PodScheduled``), "pulls" the image, runs the init containers then the main container, moves the phase
``Pending -> Running -> Succeeded | Failed`` with the container states a kubelet reports, writes the
container's stdout+stderr into the pod log, emits the usual events, and on a graceful deletion sends SIGTERM
to the container's first process, SIGKILL to all of it after the grace period, then removes the pod.

What a container *is* here:

- the main container runs its ``command`` on this host with the container's ``env``. A pod's filesystem
  of its own is two per-pod directories: the ``aihub-tools`` emptyDir at ``/.aihub``, and ``/podfs``
  (a stand-in for the container's root filesystem, so two pods can use the same absolute path, as a
  workflow's producer and consumer of a ``path`` output do). Every occurrence of ``/.aihub`` or
  ``/podfs`` in a command item or env value is rewritten to the pod's directory. Other paths are the
  host's (tests use unique ones under ``tmp_path``);
- the ``aihub-init`` container's job (copy a static busybox into ``/.aihub/bin``) is simulated: with
  ``busybox=`` (the fixture passes ``$K8S_SIM_BUSYBOX``, e.g. Debian's ``busybox-static``) that binary is
  copied, as in a real pod; else a ``busybox`` that runs the host's tools (``busybox wget ...`` execs the
  host's ``wget``; ``nc`` is ``tests/k8s/nc.py``);
- images: ``bad image`` (with a space) gives ``InvalidImageName``; ``missing/...`` gives ``ErrImagePull``
  then ``ImagePullBackOff``; anything else "pulls" at once;
- annotation ``sim/init-exit: N`` makes the init container exit with N (the pod then fails).

``hold()`` keeps new pods unscheduled (``Pending``) until ``release()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from tests.k8s.emulator import Emulator, Obj, now

TOOLS = "/.aihub"
PODFS = "/podfs"
# busybox's applets are the host's tools, but for nc, which the host may lack
SHIM = f"""#!/bin/sh
if [ "$1" = nc ]; then shift; exec {sys.executable} {Path(__file__).with_name("nc.py")} "$@"; fi
exec "$@"
"""


class Kubelet:
    def __init__(
        self, emulator: Emulator, namespace: str, work: Path, *, node: str = "sim-node-1", busybox: str = ""
    ) -> None:
        self.emu = emulator
        self.busybox = busybox
        self.namespace = namespace
        self.work = work
        self.node = node
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.deleting: dict[str, asyncio.Event] = {}
        self.signals: dict[str, list[str]] = {}  # what each pod's main process was sent
        self._schedulable = asyncio.Event()
        self._schedulable.set()
        self._ips = itertools.count(2)

    def start(self) -> None:
        self.emu.listeners.append(self._on_pod)

    def hold(self) -> None:
        self._schedulable.clear()

    def release(self) -> None:
        self._schedulable.set()

    async def close(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------------------ pod events
    def _on_pod(self, event: str, pod: Obj) -> None:
        meta = pod["metadata"]
        if meta["namespace"] != self.namespace:
            return
        name = meta["name"]
        if event == "ADDED" and name not in self.tasks:
            self.deleting[name] = asyncio.Event()
            self.tasks[name] = asyncio.get_running_loop().create_task(self._run(name), name=f"kubelet {name}")
        elif event == "MODIFIED" and meta.get("deletionTimestamp") and name in self.deleting:
            self.deleting[name].set()
        elif event == "DELETED":
            task = self.tasks.get(name)
            if task is not None and name not in self.procs:
                task.cancel()  # deleted at once (never ran): nothing to stop

    # ------------------------------------------------------------------------------ one pod
    async def _run(self, name: str) -> None:
        ns = self.namespace
        deleting = self.deleting[name]
        await _first(self._schedulable.wait(), deleting.wait())
        if deleting.is_set():
            self.emu.remove_pod(ns, name)
            return
        pod = self._update(name, self._schedule)
        if pod is None:
            return
        self.emu.add_event(pod, "Scheduled", f"Successfully assigned {ns}/{name} to {self.node}")
        main = pod["spec"]["containers"][0]
        image = main["image"]
        if " " in image:
            self._waiting(name, "InvalidImageName", f'Failed to apply default image tag "{image}"')
            self.emu.add_event(
                pod, "InspectFailed", f'Failed to apply default image tag "{image}"', type_="Warning"
            )
            await deleting.wait()
            self.emu.remove_pod(ns, name)
            return
        if image.startswith("missing/"):
            self._waiting(name, "ErrImagePull", f'failed to pull image "{image}": not found')
            self.emu.add_event(pod, "Failed", f'Failed to pull image "{image}": not found', type_="Warning")
            self._waiting(name, "ImagePullBackOff", f'Back-off pulling image "{image}"')
            await deleting.wait()
            self.emu.remove_pod(ns, name)
            return
        tools = self.work / name
        if not await self._init_containers(name, pod, tools):
            return
        self.emu.add_event(
            pod,
            "Pulled",
            f'Container image "{image}" already present on machine',
            path="spec.containers{main}",
        )
        self.emu.add_event(pod, "Created", "Created container main", path="spec.containers{main}")
        await self._main(name, pod, main, tools, deleting)
        if deleting.is_set():
            self.emu.remove_pod(ns, name)

    def _update(self, name: str, change: Any) -> Obj | None:
        return self.emu.update_pod(self.namespace, name, change)

    def _schedule(self, pod: Obj) -> None:
        pod["spec"]["nodeName"] = self.node
        status = pod["status"]
        status.update({"hostIP": "10.0.0.1", "podIP": f"10.1.0.{next(self._ips)}", "startTime": now()})
        status["conditions"] = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}]

    def _waiting(self, name: str, reason: str, message: str) -> None:
        def change(pod: Obj) -> None:
            pod["status"]["containerStatuses"] = [
                _status(c["name"], c["image"], {"waiting": {"reason": reason, "message": message}})
                for c in pod["spec"]["containers"]
            ]

        self._update(name, change)

    async def _init_containers(self, name: str, pod: Obj, tools: Path) -> bool:
        (tools / "bin").mkdir(parents=True, exist_ok=True)
        (tools / "tmp").mkdir(exist_ok=True)
        code = int(pod["metadata"].get("annotations", {}).get("sim/init-exit", "0"))
        for init in pod["spec"].get("initContainers", []):
            if init["name"] == "aihub-init":  # copies the helper image's busybox into /.aihub/bin
                busybox = tools / "bin" / "busybox"
                if self.busybox:
                    shutil.copy(self.busybox, busybox)
                else:
                    busybox.write_text(SHIM)
                busybox.chmod(0o755)
            state = {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": now(),
                    "finishedAt": now(),
                }
            }

            def change(obj: Obj, state: dict[str, Any] = state, init: Obj = init) -> None:
                obj["status"]["initContainerStatuses"] = [_status(init["name"], init["image"], state)]
                if state["terminated"]["exitCode"]:
                    obj["status"]["phase"] = "Failed"

            self._update(name, change)
            if code:
                return False
        return True

    async def _main(self, name: str, pod: Obj, main: Obj, tools: Path, deleting: asyncio.Event) -> int:
        (tools / "podfs").mkdir(exist_ok=True)
        argv = [_rewrite(p, tools) for p in [*main.get("command", []), *main.get("args", [])]]
        env = {e["name"]: _rewrite(e.get("value", ""), tools) for e in main.get("env", [])}
        cwd = main.get("workingDir") if os.path.isdir(main.get("workingDir") or "") else str(tools)
        buffer = self.emu.log(self.namespace, name, "main")
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        started = now()

        def running(obj: Obj) -> None:
            obj["status"]["phase"] = "Running"
            obj["status"]["containerStatuses"] = [
                _status("main", main["image"], {"running": {"startedAt": started}}, ready=True)
            ]
            obj["status"]["conditions"].append(
                {"type": "Ready", "status": "True", "lastTransitionTime": now()}
            )

        self._update(name, running)
        self.emu.add_event(pod, "Started", "Started container main", path="spec.containers{main}")
        assert proc.stdout is not None
        reader = asyncio.create_task(_copy_output(proc.stdout, buffer))
        waiter = asyncio.create_task(proc.wait())
        await _first(asyncio.shield(waiter), deleting.wait())
        if not waiter.done():
            grace = int(self.emu.pod(self.namespace, name)["metadata"].get("deletionGracePeriodSeconds", 30))
            self.emu.add_event(pod, "Killing", "Stopping container main", path="spec.containers{main}")
            self.signals.setdefault(name, []).append("SIGTERM")
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.shield(waiter)
            if not waiter.done():
                self.signals[name].append("SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        returncode = await waiter
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the container is gone: so is everything it started
        await reader
        del self.procs[name]
        code = returncode if returncode >= 0 else 128 - returncode
        finished = now()

        def terminated(obj: Obj) -> None:
            state = {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": started,
                    "finishedAt": finished,
                }
            }
            obj["status"]["containerStatuses"] = [_status("main", main["image"], state)]
            obj["status"]["phase"] = "Succeeded" if code == 0 else "Failed"

        self._update(name, terminated)
        buffer.close()
        return code


def _status(name: str, image: str, state: dict[str, Any], *, ready: bool = False) -> Obj:
    return {
        "name": name,
        "image": image,
        "imageID": f"sim://{image}",
        "ready": ready,
        "restartCount": 0,
        "state": state,
    }


def _rewrite(value: str, tools: Path) -> str:
    """The pod's own directories in a command item or env value (see the module docstring)."""
    for root, local in ((TOOLS, tools), (PODFS, tools / "podfs")):
        value = re.sub(re.escape(root) + r"(?![\w.-])", lambda _, local=local: str(local), value)
    return value


async def _copy_output(stream: asyncio.StreamReader, buffer: Any) -> None:
    while chunk := await stream.read(65536):
        buffer.write(chunk)


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
