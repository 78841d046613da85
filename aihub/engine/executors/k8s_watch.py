"""The Kubernetes executor's pod and event watches: one of each for the whole executor.

Each lists, then watches from the list's ``resourceVersion``; a watch that ends is resumed from the last
version seen, and an expired one (410 Gone) is replaced by a fresh list. The pod watch keeps a cache of our
pods (label ``aihub/run``) and the last state of those deleted (bounded); the event watch keeps the
Kubernetes events of our pods (bounded per pod and in pods), including those that expired on the server.
Whoever follows a pod takes :meth:`PodWatches.changed` *before* reading the pod's state, and is woken by
the next change to it: a thousand running attempts cost two HTTP streams, not a thousand.

:func:`watch_until` is the same list and watch, until a check on the watched object holds (the Kaniko build
backend follows its Job and its build pod with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from aihub.engine.executors.k8s_client import API_TIMEOUT, KubernetesApiError, call_options, request
from aihub.engine.executors.k8s_pod import LABEL_RUN

__all__ = ["Check", "PodWatches", "newest", "watch_options", "watch_until"]

log = logging.getLogger("aihub.engine.executors.kubernetes")

_EVENTS_PER_POD = 100
_EVENT_PODS = 5000
_GONE_KEPT = 10_000

#: ``(pod as last seen or None, whether it is gone)``
PodState = tuple[dict[str, Any] | None, bool]
_T = TypeVar("_T")
#: ``check(object or None, event type)``: a result once the object is as wanted, else None
Check = Callable[[dict[str, Any] | None, str], _T | None]


def watch_options(version: str | None, watch_timeout: int) -> dict[str, Any]:
    """Keyword arguments of one watch request from ``version`` that the server ends after ``watch_timeout``."""
    return {
        "resource_version": version,
        "timeout_seconds": watch_timeout,
        "allow_watch_bookmarks": True,
        "_request_timeout": aiohttp.ClientTimeout(
            sock_connect=API_TIMEOUT, sock_read=watch_timeout + API_TIMEOUT
        ),
    }


async def watch_until(
    list_call: Callable[..., Any],
    namespace: str,
    selector: dict[str, str],
    check: Check[_T],
    *,
    watch_timeout: int,
    expired: Callable[[], None],
) -> _T:
    """The first result of ``check(object, event type)``: on the newest listed object (None if there is
    none; type ``LISTED``), then on each watched change. List, then watch from the list's version; a watch
    the server ends is resumed from the last version seen, an expired one (410 Gone) listed again after
    calling ``expired()``. Used by the Kaniko build backend to follow its Job and build pod."""
    while True:
        listing = await request(list_call(namespace, **selector, **call_options()))
        result = check(newest(listing.get("items") or []), "LISTED")
        if result is not None:
            return result
        version = (listing.get("metadata") or {}).get("resourceVersion")
        try:
            while True:
                version, result = await _watch_for(
                    list_call, namespace, version, selector, check, watch_timeout
                )
                if result is not None:
                    return result
        except ApiException as exc:
            if exc.status != 410:
                raise
            expired()


async def _watch_for(
    list_call: Callable[..., Any],
    namespace: str,
    version: str | None,
    selector: dict[str, str],
    check: Check[_T],
    watch_timeout: int,
) -> tuple[str | None, _T | None]:
    """One watch request, until the server ends it or ``check`` has a result; the last version seen."""
    stream = watch.Watch(return_type="object")
    try:
        options = watch_options(version, watch_timeout)
        async for event in stream.stream(list_call, namespace, **options, **selector):
            obj = event["raw_object"]
            version = (obj.get("metadata") or {}).get("resourceVersion") or version
            if event["type"] != "BOOKMARK" and (result := check(obj, event["type"])) is not None:
                return version, result
    finally:
        await stream.close()
    return version, None


def newest(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The object created last (by ``metadata.creationTimestamp``), None when there is none."""
    items = sorted(items, key=lambda o: (o.get("metadata") or {}).get("creationTimestamp") or "")
    return items[-1] if items else None


class PodWatches:
    """The caches of our pods and of their events, kept by a pod watch and an event watch."""

    def __init__(self, namespace: str, watch_timeout: int) -> None:
        self.namespace = namespace
        self.watch_timeout = watch_timeout
        self.core: client.CoreV1Api | None = None
        self.synced = asyncio.Event()  # set once the pod cache holds a complete list
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pods: dict[str, dict[str, Any]] = {}
        self._gone: OrderedDict[str, dict[str, Any]] = OrderedDict()  # last state of deleted pods
        self._changes: dict[str, asyncio.Event] = {}
        self._events: OrderedDict[str, dict[str, dict[str, Any]]] = OrderedDict()

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self, core: client.CoreV1Api) -> None:
        self.core = core
        self._spawn(self._watch_pods(), "pod watch")
        self._spawn(self._watch_events(), "event watch")

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self.synced = asyncio.Event()  # a later start() begins from a fresh list
        self._pods.clear()
        self.core = None

    def _spawn(self, coro: Any, name: str) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("kubernetes executor: %s failed", task.get_name(), exc_info=task.exception())

    @property
    def api(self) -> client.CoreV1Api:
        """The client of the API server the watches were started with."""
        if self.core is None:
            raise RuntimeError("PodWatches.start() was not called")
        return self.core

    # ------------------------------------------------------------------------------------ pods
    def changed(self, name: str) -> asyncio.Event:
        """An event set at the next change of pod ``name`` (take it *before* reading the pod's state)."""
        return self._changes.setdefault(name, asyncio.Event())

    def labelled(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        """The cached pods carrying all of ``labels``."""
        return [p for p in self._pods.values() if labels.items() <= _labels(p).items()]

    async def pod_state(self, name: str) -> PodState:
        """(the pod as last seen, whether it is gone). A pod the watch has not shown yet is read directly."""
        if name in self._pods:
            return self._pods[name], False
        if name in self._gone:
            return self._gone[name], True
        try:
            return await request(self.api.read_namespaced_pod(name, self.namespace, **call_options())), False
        except KubernetesApiError as exc:
            if exc.status == 404:
                return None, True
            log.warning("kubernetes executor: reading pod %s failed: %s", name, exc)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("kubernetes executor: reading pod %s failed: %s", name, exc)
        return None, False

    async def until(
        self, name: str, done: Callable[[dict[str, Any] | None, bool], bool], within: float
    ) -> bool:
        """Whether ``done(pod, gone)`` became true within ``within`` seconds (checked at each change)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while True:
                    changed = self.changed(name)
                    if done(*await self.pod_state(name)):
                        return True
                    await changed.wait()
        return False

    def forget(self, name: str) -> None:
        """The follower of a deleted pod has taken its last state."""
        self._gone.pop(name, None)

    # ------------------------------------------------------------------------------------ events
    async def pod_events(self, name: str) -> list[dict[str, Any]]:
        """The events the API server has now, plus those the event watch kept after they expired there."""
        merged = dict(self._events.get(name, {}))
        selector = f"involvedObject.kind=Pod,involvedObject.name={name}"
        try:
            listing = await request(
                self.api.list_namespaced_event(self.namespace, field_selector=selector, **call_options())
            )
        except (KubernetesApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("kubernetes executor: listing events of %s failed: %s", name, exc)
            listing = {}
        for item in listing.get("items") or []:
            merged[_event_key(item)] = _event_json(item)
        return sorted(merged.values(), key=lambda e: e["time"] or "")

    def forget_events(self, name: str) -> None:
        """The attempt's report holds the pod's events now."""
        self._events.pop(name, None)

    # ------------------------------------------------------------------------------------ watching
    async def _watch_pods(self) -> None:
        await self._list_and_watch(
            self.api.list_namespaced_pod, self._on_pod_list, self._on_pod_event, label_selector=LABEL_RUN
        )

    async def _watch_events(self) -> None:
        await self._list_and_watch(
            self.api.list_namespaced_event,
            self._on_event_list,
            self._on_event_event,
            field_selector="involvedObject.kind=Pod",
        )

    async def _list_and_watch(
        self,
        lister: Callable[..., Any],
        on_list: Callable[[list[dict[str, Any]]], None],
        on_event: Callable[[str, dict[str, Any]], None],
        **selector: str,
    ) -> None:
        """List, then watch from the list's version; resume where a watch ended; re-list after 410 Gone."""
        failures = 0
        while True:
            try:
                listing = await request(lister(self.namespace, **selector, **call_options()))
                on_list(listing.get("items") or [])
                version = (listing.get("metadata") or {}).get("resourceVersion")
                while True:
                    version = await self._watch_once(lister, on_event, version, selector)
                    failures = 0
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status == 410:
                    log.info("kubernetes executor: watch expired (%s); listing again", exc.reason)
                    continue
                failures += 1
                log.warning("kubernetes executor: watch failed: %s", exc)
            except Exception as exc:  # a watch must outlive anything the server or the network does
                failures += 1
                log.warning("kubernetes executor: list/watch failed: %s", exc)
            await asyncio.sleep(min(30.0, 0.5 * 2 ** min(failures, 6)))

    async def _watch_once(
        self,
        lister: Callable[..., Any],
        on_event: Callable[[str, dict[str, Any]], None],
        version: str | None,
        selector: dict[str, str],
    ) -> str | None:
        """One watch request until the server ends it; returns the last resourceVersion seen."""
        stream = watch.Watch(return_type="object")
        try:
            options = watch_options(version, self.watch_timeout)
            async for event in stream.stream(lister, self.namespace, **options, **selector):
                obj = event["raw_object"]
                if event["type"] != "BOOKMARK":
                    on_event(event["type"], obj)
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
        finally:
            await stream.close()
        return version

    def _notify(self, name: str) -> None:
        event = self._changes.pop(name, None)
        if event is not None:
            event.set()

    def _on_pod_list(self, items: list[dict[str, Any]]) -> None:
        fresh = {pod["metadata"]["name"]: pod for pod in items}
        for name in set(self._pods) - set(fresh):  # deleted while no watch was open
            self._remember_gone(name, self._pods[name])
        self._pods = fresh
        self.synced.set()
        for name in list(self._changes):
            self._notify(name)

    def _on_pod_event(self, kind: str, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        if kind == "DELETED":
            self._pods.pop(name, None)
            self._remember_gone(name, pod)
        elif kind in ("ADDED", "MODIFIED"):
            self._pods[name] = pod
            self._gone.pop(name, None)
        self._notify(name)

    def _remember_gone(self, name: str, pod: dict[str, Any]) -> None:
        """Keep the last state of a deleted pod for whoever waits for it (bounded: followers take theirs)."""
        self._gone[name] = pod
        self._gone.move_to_end(name)
        while len(self._gone) > _GONE_KEPT:
            self._gone.popitem(last=False)

    def _on_event_list(self, items: list[dict[str, Any]]) -> None:
        # merged, not replaced: events that expired on the server stay until the attempt's report has them
        for item in items:
            self._on_event_event("ADDED", item)

    def _on_event_event(self, kind: str, event: dict[str, Any]) -> None:
        pod = (event.get("involvedObject") or {}).get("name") or ""
        if not pod.startswith("aihub-"):
            return
        key = _event_key(event)
        if kind == "DELETED":  # events expire on the server; the attempt's copy stays in its report
            return
        per_pod = self._events.setdefault(pod, {})
        self._events.move_to_end(pod)
        per_pod[key] = _event_json(event)
        while len(per_pod) > _EVENTS_PER_POD:
            per_pod.pop(next(iter(per_pod)))
        while len(self._events) > _EVENT_PODS:
            self._events.popitem(last=False)


def _labels(pod: dict[str, Any]) -> dict[str, str]:
    return (pod.get("metadata") or {}).get("labels") or {}


def _event_key(event: dict[str, Any]) -> str:
    meta = event.get("metadata") or {}
    return str(meta.get("uid") or meta.get("name") or "")


def _event_json(event: dict[str, Any]) -> dict[str, Any]:
    source = event.get("source") or {}
    return {
        "time": event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or (event.get("metadata") or {}).get("creationTimestamp"),
        "type": event.get("type") or "Normal",
        "reason": event.get("reason") or "",
        "message": event.get("message") or "",
        "count": event.get("count") or 1,
        "source": source.get("component") or event.get("reportingComponent") or "",
        "object": (event.get("involvedObject") or {}).get("fieldPath") or "",
    }
