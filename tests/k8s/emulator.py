"""A small Kubernetes API server for tests: core/v1 pods, pod logs and events, batch/v1 Jobs, over real HTTP.

Why not kmock's ``KubernetesEmulator``: it keeps objects without ``resourceVersion``s, ignores label and
field selectors, has no pod log subresource and deletes at once — and those are exactly what the executor
relies on (watch resumption and 410 Gone, ``aihub/run`` selectors, ``follow``-ed logs, graceful deletion).
So this emulator speaks that part of the protocol as the real API server does:

- every change bumps one global ``resourceVersion``; lists carry it in ``metadata.resourceVersion``;
- ``?watch=true``: without ``resourceVersion`` (or ``0``) it first sends ``ADDED`` for every current object;
  with one it replays the retained history after it, or sends an ``ERROR`` event with a ``410 Expired``
  ``Status`` when that history was compacted away; ``timeoutSeconds`` ends the stream; ``BOOKMARK``s are not
  sent (they are optional);
- ``labelSelector`` (``k``, ``!k``, ``k=v``, ``k==v``, ``k!=v``) and ``fieldSelector`` (``a.b=v``, ``a.b!=v``);
- ``DELETE`` of a pod that runs on a node sets ``deletionTimestamp`` + ``deletionGracePeriodSeconds``
  (``MODIFIED``); the kubelet removes it once its containers stopped (:meth:`Emulator.remove_pod`). A pod
  not on a node, or ``gracePeriodSeconds=0``, goes at once (``DELETED``);
- ``GET .../pods/NAME/log?container=&follow=&limitBytes=`` answers 400 while the container waits to start,
  else the log so far, and with ``follow`` everything written until the container terminates (test hooks:
  :meth:`LogBuffer.cut` ends open streams early, :meth:`LogBuffer.drop` breaks them off);
- ``batch/v1`` Jobs: create (defaulting ``spec.selector`` and the template's ``controller-uid`` /
  ``job-name`` labels from the new uid, as the real API server does), get, list/watch (as pods) and delete
  (at once; ``propagationPolicy`` is recorded in :attr:`Emulator.deleted_jobs` and handed to the job
  listeners, which play the garbage collector). ``tests/k8s/jobs.py`` is the job controller.

The simulated kubelet (``tests/k8s/kubelet.py``) changes pods through the Python methods here, like the
real kubelet's status updates; the executor under test only ever uses HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import re
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

Obj = dict[str, Any]
Kind = str  # "pods" | "events" | "jobs"
LIST_KINDS = {"pods": ("PodList", "v1"), "events": ("EventList", "v1"), "jobs": ("JobList", "batch/v1")}


def flag(value: str | None) -> bool:
    """A boolean query parameter as the API server reads it (Go's strconv.ParseBool)."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def status_body(code: int, reason: str, message: str) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def error(code: int, reason: str, message: str) -> web.Response:
    return web.json_response(status_body(code, reason, message), status=code)


#: (method, path) → (API group, resource, verb): the emulator's routes as the API server authorises them
_ROUTES: list[tuple[str, re.Pattern[str], str, str]] = [
    (method, re.compile(pattern), group, resource)
    for method, pattern, group, resource in [
        ("POST", r"/api/v1/namespaces/[^/]+/pods", "", "pods"),
        ("GET", r"/api/v1/namespaces/[^/]+/pods", "", "pods"),
        ("GET", r"/api/v1/namespaces/[^/]+/pods/[^/]+", "", "pods"),
        ("DELETE", r"/api/v1/namespaces/[^/]+/pods/[^/]+", "", "pods"),
        ("GET", r"/api/v1/namespaces/[^/]+/pods/[^/]+/log", "", "pods/log"),
        ("POST", r"/api/v1/namespaces/[^/]+/events", "", "events"),
        ("GET", r"/api/v1/namespaces/[^/]+/events", "", "events"),
        ("POST", r"/apis/batch/v1/namespaces/[^/]+/jobs", "batch", "jobs"),
        ("GET", r"/apis/batch/v1/namespaces/[^/]+/jobs", "batch", "jobs"),
        ("GET", r"/apis/batch/v1/namespaces/[^/]+/jobs/[^/]+", "batch", "jobs"),
        ("DELETE", r"/apis/batch/v1/namespaces/[^/]+/jobs/[^/]+", "batch", "jobs"),
    ]
]
#: collection paths: a GET there lists (or watches), a POST creates
_COLLECTION = re.compile(r"/api(s/[^/]+)?/v1/namespaces/[^/]+/[a-z]+")


def rbac_call(method: str, path: str, query: dict[str, str]) -> tuple[str, str, str] | None:
    """The ``(apiGroup, resource, verb)`` an RBAC rule must grant for a request, as the API server's
    authorizer derives it (a GET of a collection is ``list``, or ``watch`` with ``watch=true``; a GET of one
    object ``get``; POST ``create``; DELETE ``delete``). None for discovery (``/api``, ``/version``: granted to
    every authenticated user by ``system:discovery``)."""
    for route_method, pattern, group, resource in _ROUTES:
        if route_method == method and pattern.fullmatch(path):
            if method == "POST":
                verb = "create"
            elif method == "DELETE":
                verb = "delete"
            elif _COLLECTION.fullmatch(path):
                verb = "watch" if flag(query.get("watch")) else "list"
            else:
                verb = "get"
            return group, resource, verb
    if path in ("/api", "/version"):
        return None
    raise AssertionError(f"the emulator serves no {method} {path}: add it to _ROUTES")


#: every RBAC call made to any emulator of this test session (``tests/k8s/test_rbac.py`` compares them with
#: ``deploy/kubernetes``'s Role)
SESSION_CALLS: set[tuple[str, str, str]] = set()


@dataclass
class Selector:
    labels: list[tuple[str, str, str]] = field(default_factory=list)  # (op, key, value)
    fields: list[tuple[str, str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, label_selector: str, field_selector: str) -> Selector:
        sel = cls()
        for part in filter(None, (p.strip() for p in label_selector.split(","))):
            sel.labels.append(_requirement(part))
        for part in filter(None, (p.strip() for p in field_selector.split(","))):
            op, key, value = _requirement(part)
            if op not in ("=", "!="):
                raise ValueError(f"field selector {part!r}: only = and != are supported")
            sel.fields.append((op, key, value))
        return sel

    def matches(self, obj: Obj) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        for op, key, value in self.labels:
            if op == "exists" and key not in labels:
                return False
            if op == "!exists" and key in labels:
                return False
            if op == "=" and labels.get(key) != value:
                return False
            if op == "!=" and labels.get(key) == value:
                return False
        for op, key, value in self.fields:
            actual: Any = obj
            for part in key.split("."):
                actual = actual.get(part) if isinstance(actual, dict) else None
            if (op == "=") != (str(actual if actual is not None else "") == value):
                return False
        return True


def _requirement(part: str) -> tuple[str, str, str]:
    if "!=" in part:
        key, value = part.split("!=", 1)
        return "!=", key.strip(), value.strip()
    if "==" in part:
        key, value = part.split("==", 1)
        return "=", key.strip(), value.strip()
    if "=" in part:
        key, value = part.split("=", 1)
        return "=", key.strip(), value.strip()
    if part.startswith("!"):
        return "!exists", part[1:].strip(), ""
    if any(c in part for c in " ()"):
        raise ValueError(f"label selector {part!r} is not supported by the emulator")
    return "exists", part, ""


@dataclass(eq=False)
class Watcher:
    kind: Kind
    namespace: str
    selector: Selector
    queue: asyncio.Queue[Obj | None] = field(default_factory=asyncio.Queue)


@dataclass
class LogBuffer:
    lines: list[bytes] = field(default_factory=list)
    closed: bool = False
    cuts: int = 0  # how often open streams were ended early (test hook)
    drops: int = 0  # how often open streams were broken (test hook)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def write(self, data: bytes) -> None:
        self.lines.append(data)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def cut(self) -> None:
        """End the open follow streams now, as a kubelet's idle timeout for streams does."""
        self.cuts += 1
        self._wake()

    def drop(self) -> None:
        """Break the open follow streams now, as a dropped connection does (the body never ends)."""
        self.drops += 1
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class Emulator:
    """In-memory objects plus the HTTP app serving them (start with :meth:`serve`)."""

    def __init__(self, *, history: int = 10_000) -> None:
        self.objects: dict[tuple[Kind, str, str], Obj] = {}
        self.rv = 0
        self.history: deque[tuple[int, Kind, str, Obj]] = deque(maxlen=history)
        self.compacted_rv = 0  # watches from a version older than this get 410
        self.watchers: set[Watcher] = set()
        self.logs: dict[tuple[str, str, str], LogBuffer] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.listeners: list[Callable[[str, Obj], None]] = []  # the kubelet's "watch"
        self.job_listeners: list[Callable[[str, Obj], None]] = []  # the job controller's "watch"
        self.deleted_jobs: list[tuple[str, str, str]] = []  # (namespace, name, propagationPolicy)
        self.watch_log: list[tuple[Kind, dict[str, str]]] = []  # every watch request, in order
        self._watch_added = asyncio.Event()
        self._request_seen = asyncio.Event()
        self._names = itertools.count(1)
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._closing = False

    # ------------------------------------------------------------------------------ server
    async def serve(self) -> str:
        app = web.Application()
        app.middlewares.append(self._record)
        base = "/api/v1/namespaces/{ns}"
        app.router.add_get("/api", self._api_versions)
        app.router.add_get("/version", self._version)
        app.router.add_post(base + "/pods", self._create_pod)
        app.router.add_get(base + "/pods", self._list_or_watch("pods"))
        app.router.add_get(base + "/pods/{name}", self._get_pod)
        app.router.add_delete(base + "/pods/{name}", self._delete_pod)
        app.router.add_get(base + "/pods/{name}/log", self._pod_log)
        app.router.add_post(base + "/events", self._create_event)
        app.router.add_get(base + "/events", self._list_or_watch("events"))
        jobs = "/apis/batch/v1/namespaces/{ns}/jobs"
        app.router.add_post(jobs, self._create_job)
        app.router.add_get(jobs, self._list_or_watch("jobs"))
        app.router.add_get(jobs + "/{name}", self._get_job)
        app.router.add_delete(jobs + "/{name}", self._delete_job)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        # A client re-opens a watch the moment it ends: one that arrived after drop_watches() and before the
        # runner stopped listening stayed open, and the runner's clean-up waited for it (a minute or more;
        # test_k8s_ready hung so about one run in five). From now on a new watch ends at once.
        self._closing = True
        self.drop_watches()
        for buffer in self.logs.values():
            buffer.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.query)))
        call = rbac_call(request.method, request.path, dict(request.query))
        if call is not None:
            SESSION_CALLS.add(call)
        self._request_seen.set()
        self._request_seen = asyncio.Event()
        return await handler(request)  # type: ignore[no-any-return]

    async def request_seen(self) -> None:
        """Return at the next request."""
        await self._request_seen.wait()

    async def _api_versions(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIVersions", "versions": ["v1"]})

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"major": "1", "minor": "31", "gitVersion": "v1.31.0-emulator"})

    # ------------------------------------------------------------------------------ storage
    def _commit(self, kind: Kind, event: str, obj: Obj) -> Obj:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        key = (kind, obj["metadata"]["namespace"], obj["metadata"]["name"])
        if event == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        snapshot = copy.deepcopy(obj)
        self.history.append((self.rv, kind, event, snapshot))
        for watcher in list(self.watchers):
            if watcher.kind == kind and self._visible(watcher, snapshot):
                watcher.queue.put_nowait({"type": event, "object": snapshot})
        if kind == "pods":
            for listener in list(self.listeners):
                listener(event, snapshot)
        if kind == "jobs":
            for listener in list(self.job_listeners):
                listener(event, snapshot)
        return snapshot

    @staticmethod
    def _visible(watcher: Watcher, obj: Obj) -> bool:
        return obj["metadata"]["namespace"] == watcher.namespace and watcher.selector.matches(obj)

    def pod(self, namespace: str, name: str) -> Obj | None:
        obj = self.objects.get(("pods", namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def pods(self, namespace: str) -> list[Obj]:
        return [copy.deepcopy(o) for (k, ns, _), o in self.objects.items() if k == "pods" and ns == namespace]

    def update_pod(self, namespace: str, name: str, change: Callable[[Obj], None]) -> Obj | None:
        """Apply ``change`` to the stored pod (a status update of the kubelet): one MODIFIED event."""
        return self.update("pods", namespace, name, change)

    def update(self, kind: Kind, namespace: str, name: str, change: Callable[[Obj], None]) -> Obj | None:
        """Apply ``change`` to a stored object (a controller's status update): one MODIFIED event."""
        current = self.objects.get((kind, namespace, name))
        if current is None:
            return None
        obj = copy.deepcopy(current)
        change(obj)
        return self._commit(kind, "MODIFIED", obj)

    def job(self, namespace: str, name: str) -> Obj | None:
        obj = self.objects.get(("jobs", namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def add_pod(self, namespace: str, pod: Obj) -> Obj:
        """Store a new pod (as a controller creates one); the ADDED snapshot."""
        meta = pod.setdefault("metadata", {})
        meta.update({"namespace": namespace, "uid": str(uuid.uuid4()), "creationTimestamp": now()})
        pod.setdefault("status", {})["phase"] = "Pending"
        pod["status"]["qosClass"] = "Guaranteed"
        return self._commit("pods", "ADDED", pod)

    def remove_pod(self, namespace: str, name: str) -> None:
        """The end of a graceful deletion: the kubelet confirms the containers are gone."""
        current = self.objects.get(("pods", namespace, name))
        if current is not None:
            self._commit("pods", "DELETED", copy.deepcopy(current))
        for (ns, pod, _), buffer in self.logs.items():
            if ns == namespace and pod == name:
                buffer.close()

    def add_event(self, pod: Obj, reason: str, message: str, *, type_: str = "Normal", path: str = "") -> Obj:
        meta = pod["metadata"]
        stamp = now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{next(self._names):x}",
                "namespace": meta["namespace"],
                "uid": str(uuid.uuid4()),
                "creationTimestamp": stamp,
            },
            "involvedObject": {
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
                "fieldPath": path,
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": "kubelet", "host": pod.get("spec", {}).get("nodeName", "")},
        }
        return self._commit("events", "ADDED", event)

    def log(self, namespace: str, pod: str, container: str) -> LogBuffer:
        return self.logs.setdefault((namespace, pod, container), LogBuffer())

    # ------------------------------------------------------------------------------ test hooks
    def compact(self) -> None:
        """Forget the history (etcd compaction): resuming a watch from an older version gets 410 Gone."""
        self.history.clear()
        self.compacted_rv = self.rv

    def drop_watches(self) -> None:
        """End every open watch now, as an API server does when its watch timeout comes."""
        for watcher in list(self.watchers):
            watcher.queue.put_nowait(None)

    async def until_watches(self, kind: Kind, count: int, *, timeout: float = 30) -> None:
        """Return once ``count`` watch requests for ``kind`` have arrived."""
        async with asyncio.timeout(timeout):
            while sum(1 for k, _ in self.watch_log if k == kind) < count:
                added = self._watch_added
                await added.wait()

    def watches(self, kind: Kind) -> list[dict[str, str]]:
        return [q for k, q in self.watch_log if k == kind]

    def count(self, method: str, path_suffix: str, **query: str) -> int:
        return sum(
            1
            for m, p, q in self.requests
            if m == method and p.endswith(path_suffix) and all(q.get(k) == v for k, v in query.items())
        )

    # ------------------------------------------------------------------------------ handlers
    async def _create_pod(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        pod = await request.json()
        meta = pod.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            return error(422, "Invalid", "Pod is invalid: metadata.name: Required value")
        if not (pod.get("spec") or {}).get("containers"):
            return error(422, "Invalid", f'Pod "{name}" is invalid: spec.containers: Required value')
        if ("pods", ns, name) in self.objects:
            return error(409, "AlreadyExists", f'pods "{name}" already exists')
        return web.json_response(self.add_pod(ns, pod), status=201)

    async def _create_job(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        job = await request.json()
        meta = job.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            return error(422, "Invalid", "Job.batch is invalid: metadata.name: Required value")
        template = (job.get("spec") or {}).get("template") or {}
        if not (template.get("spec") or {}).get("containers"):
            return error(
                422,
                "Invalid",
                f'Job.batch "{name}" is invalid: spec.template.spec.containers: Required value',
            )
        if ("jobs", ns, name) in self.objects:
            return error(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
        uid = str(uuid.uuid4())
        meta.update({"namespace": ns, "uid": uid, "creationTimestamp": now()})
        job["spec"].setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
        template.setdefault("metadata", {}).setdefault("labels", {}).update(
            {
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "controller-uid": uid,
                "job-name": name,
            }
        )
        job["status"] = {}
        return web.json_response(self._commit("jobs", "ADDED", job), status=201)

    async def _get_job(self, request: web.Request) -> web.Response:
        job = self.job(request.match_info["ns"], request.match_info["name"])
        if job is None:
            return error(404, "NotFound", f'jobs.batch "{request.match_info["name"]}" not found')
        return web.json_response(job)

    async def _delete_job(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        current = self.objects.get(("jobs", ns, name))
        if current is None:
            return error(404, "NotFound", f'jobs.batch "{name}" not found')
        policy = request.query.get("propagationPolicy")
        if policy is None and request.can_read_body:
            with contextlib.suppress(ValueError):
                policy = (await request.json()).get("propagationPolicy")
        policy = policy or "Orphan"  # the default of batch/v1 Jobs
        self.deleted_jobs.append((ns, name, policy))
        obj = copy.deepcopy(current)
        obj["metadata"]["deletionTimestamp"] = now()
        obj["metadata"]["annotations"] = {
            **(obj["metadata"].get("annotations") or {}),
            "emulator/propagation-policy": policy,
        }
        self._commit("jobs", "DELETED", obj)
        return web.json_response(status_body(200, "", "") | {"status": "Success", "details": {"name": name}})

    async def _get_pod(self, request: web.Request) -> web.Response:
        pod = self.pod(request.match_info["ns"], request.match_info["name"])
        if pod is None:
            return error(404, "NotFound", f'pods "{request.match_info["name"]}" not found')
        return web.json_response(pod)

    async def _delete_pod(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        current = self.objects.get(("pods", ns, name))
        if current is None:
            return error(404, "NotFound", f'pods "{name}" not found')
        grace = request.query.get("gracePeriodSeconds")
        if grace is None and request.can_read_body:
            with contextlib.suppress(ValueError):
                grace = (await request.json()).get("gracePeriodSeconds")
        seconds = int(grace) if grace is not None else 30
        phase = (current.get("status") or {}).get("phase")
        on_node = bool((current.get("spec") or {}).get("nodeName"))
        if seconds == 0 or not on_node or phase in ("Succeeded", "Failed"):
            obj = copy.deepcopy(current)
            obj["metadata"]["deletionTimestamp"] = now()
            obj["metadata"]["deletionGracePeriodSeconds"] = 0
            snapshot = self._commit("pods", "DELETED", obj)
            for (lns, pod, _), buffer in self.logs.items():
                if lns == ns and pod == name:
                    buffer.close()
            return web.json_response(snapshot)
        if current["metadata"].get("deletionTimestamp"):
            return web.json_response(copy.deepcopy(current))

        def mark(obj: Obj) -> None:
            obj["metadata"]["deletionTimestamp"] = now()
            obj["metadata"]["deletionGracePeriodSeconds"] = seconds

        return web.json_response(self.update_pod(ns, name, mark))

    async def _create_event(self, request: web.Request) -> web.Response:
        event = await request.json()
        event.setdefault("metadata", {})["namespace"] = request.match_info["ns"]
        return web.json_response(self._commit("events", "ADDED", event), status=201)

    def _list_or_watch(self, kind: Kind) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            ns = request.match_info["ns"]
            try:
                selector = Selector.parse(
                    request.query.get("labelSelector", ""), request.query.get("fieldSelector", "")
                )
            except ValueError as exc:
                return error(400, "BadRequest", str(exc))
            if flag(request.query.get("watch")):
                return await self._watch(request, kind, ns, selector)
            items = [
                copy.deepcopy(o)
                for (k, ons, _), o in self.objects.items()
                if k == kind and ons == ns and selector.matches(o)
            ]
            limit = int(request.query.get("limit", "0") or 0)
            if limit:
                items = items[:limit]
            kind_name, api_version = LIST_KINDS[kind]
            return web.json_response(
                {
                    "kind": kind_name,
                    "apiVersion": api_version,
                    "metadata": {"resourceVersion": str(self.rv)},
                    "items": items,
                }
            )

        return handler

    async def _watch(
        self, request: web.Request, kind: Kind, ns: str, selector: Selector
    ) -> web.StreamResponse:
        watcher = Watcher(kind, ns, selector)
        self.watch_log.append((kind, dict(request.query)))
        self._watch_added.set()
        self._watch_added = asyncio.Event()
        since = request.query.get("resourceVersion", "")
        initial: list[Obj] = []
        if since in ("", "0"):
            initial = [
                {"type": "ADDED", "object": copy.deepcopy(o)}
                for (k, ons, _), o in self.objects.items()
                if k == kind and ons == ns and selector.matches(o)
            ]
        elif int(since) < self.compacted_rv:
            initial = [
                {
                    "type": "ERROR",
                    "object": status_body(
                        410, "Expired", f"too old resource version: {since} ({self.compacted_rv})"
                    ),
                }
            ]
        else:
            initial = [
                {"type": event, "object": copy.deepcopy(obj)}
                for rv, k, event, obj in self.history
                if rv > int(since) and k == kind and self._visible(watcher, obj)
            ]
        self.watchers.add(watcher)  # registered before any await: nothing between replay and live is lost
        if self._closing:
            watcher.queue.put_nowait(None)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            await response.prepare(request)
            for item in initial:
                await response.write(json.dumps(item).encode() + b"\n")
            if initial and initial[0]["type"] == "ERROR":
                return response
            timeout = float(request.query.get("timeoutSeconds", "0") or 0) or None
            async with asyncio.timeout(timeout):
                async for item in _drain(watcher.queue):
                    await response.write(json.dumps(item).encode() + b"\n")
        except (ConnectionResetError, TimeoutError):
            pass
        finally:
            self.watchers.discard(watcher)
        return response

    async def _pod_log(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["ns"], request.match_info["name"]
        pod = self.objects.get(("pods", ns, name))
        if pod is None:
            return error(404, "NotFound", f'pods "{name}" not found')
        containers = [c["name"] for c in pod["spec"].get("containers", [])]
        containers += [c["name"] for c in pod["spec"].get("initContainers", [])]
        container = request.query.get("container") or (containers[0] if len(containers) == 1 else "")
        if container not in containers:
            return error(400, "BadRequest", f"a container name must be specified for pod {name}")
        statuses = pod.get("status", {}).get("containerStatuses", []) + pod.get("status", {}).get(
            "initContainerStatuses", []
        )
        state = next((s.get("state", {}) for s in statuses if s["name"] == container), {})
        if not state or "waiting" in state:
            reason = state.get("waiting", {}).get("reason", "ContainerCreating")
            return error(
                400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: {reason}'
            )
        buffer = self.log(ns, name, container)
        drops = buffer.drops  # before the first await: a drop() after the request was seen breaks it
        follow = flag(request.query.get("follow"))
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        sent = 0
        cuts = buffer.cuts
        budget = int(request.query.get("limitBytes", "0") or 0) or None  # bytes left to send
        try:
            while True:
                changed = buffer.changed
                while sent < len(buffer.lines) and budget != 0:
                    data = buffer.lines[sent] if budget is None else buffer.lines[sent][:budget]
                    await response.write(data)
                    sent += 1
                    if budget is not None:
                        budget -= len(data)
                if not follow or buffer.closed or budget == 0:
                    break
                await changed.wait()
                if buffer.drops != drops:
                    assert request.transport is not None
                    request.transport.close()  # no final chunk: the client sees the body broken off
                    break
                if buffer.cuts != cuts:
                    break
        except ConnectionResetError:
            pass
        return response


async def _drain(queue: asyncio.Queue[Obj | None]) -> AsyncIterator[Obj]:
    while (item := await queue.get()) is not None:
        yield item
