"""A simulated job controller (with the kubelet part for its pods) for ``batch/v1`` Jobs in the emulator.

For every Job created it does what the cluster would, as far as the build backend can tell:

- creates one pod from the Job's template (name ``<job>-<suffix>``, the template's labels — the emulator
  added ``controller-uid`` / ``job-name`` at creation — and an ``ownerReference`` to the Job), sets the Job's
  ``status.active``;
- "runs" it: schedules it, terminates the init containers, then the main container, with the exit codes,
  log lines and termination message of :attr:`JobController.outcome` (the containers' images are not run —
  the Kaniko build is simulated); the pod ends ``Succeeded`` or ``Failed``;
- moves the Job to ``Complete`` (``SuccessCriteriaMet`` + ``Complete``, ``succeeded: 1``) or ``Failed``
  (``FailureTarget`` + ``Failed``, reason ``BackoffLimitExceeded``, ``failed: 1``) — ``backoffLimit: 0``;
- on the Job's deletion with ``propagationPolicy`` ``Background`` or ``Foreground`` removes its pods (the
  garbage collector); with ``Orphan`` leaves them.

``hold()`` keeps new pods ``Pending`` (unscheduled) until ``release()``: a test can act on the watches while
the Job is known to be still running. An :attr:`Outcome.gate` keeps the main container running after its
log lines, its log open (a test may write more into ``emulator.log(...)``), until the test sets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from dataclasses import dataclass, field
from typing import Any

from tests.k8s.emulator import Emulator, Obj, now

DIGEST = "sha256:" + "ab" * 32


@dataclass
class Outcome:
    """How the simulated containers of the next Jobs end."""

    init_exit: int = 0
    init_log: list[str] = field(default_factory=lambda: ["Cloning into '/workspace/src'..."])
    init_message: str = ""
    exit_code: int = 0
    log: list[str] = field(
        default_factory=lambda: [
            "INFO Retrieving image manifest python:3.11-slim",
            "INFO Taking snapshot of full filesystem...",
            "INFO Pushing image",
        ]
    )
    message: str = DIGEST  # kaniko writes the digest to the termination log (--digest-file)
    gate: asyncio.Event | None = None  # if set: the main container runs, its log open, until the gate opens


class JobController:
    def __init__(self, emulator: Emulator, namespace: str, *, node: str = "sim-node-1") -> None:
        self.emu = emulator
        self.namespace = namespace
        self.node = node
        self.outcome = Outcome()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.pods: dict[str, str] = {}  # job name -> its pod's name
        self.seen: list[Obj] = []  # every Job created, as stored (manifest checks)
        self._schedulable = asyncio.Event()
        self._schedulable.set()
        self._ips = itertools.count(100)

    def start(self) -> None:
        self.emu.job_listeners.append(self._on_job)

    def hold(self) -> None:
        self._schedulable.clear()

    def release(self) -> None:
        self._schedulable.set()

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.emu.job_listeners.remove(self._on_job)
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------------------ job events
    def _on_job(self, event: str, job: Obj) -> None:
        meta = job["metadata"]
        if meta["namespace"] != self.namespace:
            return
        name = meta["name"]
        if event == "ADDED":
            self.seen.append(job)
            pod = self._create_pod(job)
            self.pods[name] = pod["metadata"]["name"]
            self.tasks[meta["uid"]] = asyncio.get_running_loop().create_task(
                self._run(job, pod["metadata"]["name"], self.outcome), name=f"job {name}"
            )
        elif event == "DELETED":
            task = self.tasks.pop(meta["uid"], None)
            if task is not None:
                task.cancel()
            policy = (meta.get("annotations") or {}).get("emulator/propagation-policy", "Orphan")
            if policy in ("Background", "Foreground"):
                for pod in self.emu.pods(self.namespace):
                    owners = pod["metadata"].get("ownerReferences") or []
                    if any(o.get("uid") == meta["uid"] for o in owners):
                        self.emu.remove_pod(self.namespace, pod["metadata"]["name"])

    def _create_pod(self, job: Obj) -> Obj:
        meta = job["metadata"]
        template = job["spec"]["template"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{meta['name']}-{secrets.token_hex(3)[:5]}",
                "labels": dict(template["metadata"]["labels"]),
                "annotations": dict(template["metadata"].get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": dict(template["spec"]),
        }
        created = self.emu.add_pod(self.namespace, pod)

        def active(obj: Obj) -> None:
            obj["status"].update({"active": 1, "startTime": now(), "ready": 0})

        self.emu.update("jobs", self.namespace, meta["name"], active)
        return created

    # ------------------------------------------------------------------------------ one pod
    async def _run(self, job: Obj, pod_name: str, outcome: Outcome) -> None:
        await self._schedulable.wait()
        ns, job_name = self.namespace, job["metadata"]["name"]
        spec = job["spec"]["template"]["spec"]

        def schedule(pod: Obj) -> None:
            pod["spec"]["nodeName"] = self.node
            pod["status"].update(
                {"hostIP": "10.0.0.1", "podIP": f"10.1.0.{next(self._ips)}", "startTime": now()}
            )
            pod["status"]["conditions"] = [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}
            ]

        self.emu.update_pod(ns, pod_name, schedule)
        inits = spec.get("initContainers") or []
        for init in inits:
            self._write_log(pod_name, init["name"], outcome.init_log)
            state = _terminated(outcome.init_exit, outcome.init_message)

            def init_done(pod: Obj, init: Obj = init, state: Obj = state) -> None:
                pod["status"]["initContainerStatuses"] = [_status(init, state)]
                if state["terminated"]["exitCode"]:
                    pod["status"]["phase"] = "Failed"

            self.emu.update_pod(ns, pod_name, init_done)
            if outcome.init_exit:
                self._job_failed(job_name)
                return
        main = spec["containers"][0]
        started = now()

        def running(pod: Obj) -> None:
            pod["status"]["phase"] = "Running"
            pod["status"]["containerStatuses"] = [
                _status(main, {"running": {"startedAt": started}}, ready=True)
            ]

        self.emu.update_pod(ns, pod_name, running)
        self._write_log(pod_name, main["name"], outcome.log, close=outcome.gate is None)
        if outcome.gate is not None:
            await outcome.gate.wait()
            self.emu.log(ns, pod_name, main["name"]).close()

        def terminated(pod: Obj) -> None:
            state = _terminated(outcome.exit_code, outcome.message, started)
            pod["status"]["containerStatuses"] = [_status(main, state)]
            pod["status"]["phase"] = "Succeeded" if outcome.exit_code == 0 else "Failed"

        self.emu.update_pod(ns, pod_name, terminated)
        if outcome.exit_code:
            self._job_failed(job_name)
        else:
            self._job_complete(job_name)

    def _write_log(self, pod: str, container: str, lines: list[str], *, close: bool = True) -> None:
        buffer = self.emu.log(self.namespace, pod, container)
        for line in lines:
            buffer.write(line.encode() + b"\n")
        if close:
            buffer.close()

    def _job_complete(self, name: str) -> None:
        def change(job: Obj) -> None:
            stamp = now()
            job["status"].update({"active": 0, "succeeded": 1, "completionTime": stamp, "ready": 0})
            job["status"]["conditions"] = [
                _condition(
                    "SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"
                ),
                _condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods"),
            ]

        self.emu.update("jobs", self.namespace, name, change)

    def _job_failed(self, name: str) -> None:
        def change(job: Obj) -> None:
            job["status"].update({"active": 0, "failed": 1, "ready": 0})
            message = "Job has reached the specified backoff limit"
            job["status"]["conditions"] = [
                _condition("FailureTarget", "BackoffLimitExceeded", message),
                _condition("Failed", "BackoffLimitExceeded", message),
            ]

        self.emu.update("jobs", self.namespace, name, change)


def _terminated(code: int, message: str, started: str | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {
        "exitCode": code,
        "reason": "Completed" if code == 0 else "Error",
        "startedAt": started or now(),
        "finishedAt": now(),
    }
    if message:
        state["message"] = message
    return {"terminated": state}


def _status(container: Obj, state: dict[str, Any], *, ready: bool = False) -> Obj:
    return {
        "name": container["name"],
        "image": container["image"],
        "imageID": f"sim://{container['image']}",
        "ready": ready,
        "restartCount": 0,
        "state": state,
    }


def _condition(type_: str, reason: str, message: str) -> Obj:
    stamp = now()
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": stamp,
        "lastTransitionTime": stamp,
    }
