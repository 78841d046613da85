"""Prometheus metrics of one process (``/metrics``, issue 20).

Each application owns a ``Metrics`` with its own ``CollectorRegistry`` (never the global one), so several apps
in one process — the tests — do not share counters. Counters and histograms are updated where the events
happen (the engine when an attempt or a run ends, the HTTP middleware per request, a GraphQL extension per
operation); gauges of capacity and queues are read from the engine at scrape time.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from aihub.engine.scheduler import Engine

#: node durations and queue waits: from a second to a day
NODE_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: engine hand-offs and bus round trips: from a millisecond to a minute
FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: module builds: from a second to two hours
BUILD_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
#: distinct GraphQL operation names kept as labels; later ones count as ``(other)``
MAX_OPERATION_NAMES = 200
_OPERATION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """The metrics of one application."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._labelled: dict[tuple[Any, tuple[str, ...]], Any] = {}
        r = self.registry
        self.runs = Counter(
            "aihub_runs_finished",
            "Runs finished by this process's engine, by final status",
            ["status"],
            registry=r,
        )
        self.attempts = Counter(
            "aihub_node_attempts",
            "Node attempts ended, by final status (an automatic retry's failed attempt is FAILED) and cluster",
            ["status", "cluster"],
            registry=r,
        )
        self.node_duration = Histogram(
            "aihub_node_duration_seconds",
            "Run time of ended node attempts, per virtual cluster",
            ["cluster"],
            buckets=NODE_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "aihub_node_queue_wait_seconds",
            "Time a ready node waited for its virtual cluster's capacity before it started",
            ["cluster"],
            buckets=NODE_BUCKETS,
            registry=r,
        )
        self.handoff = Histogram(
            "aihub_node_handoff_seconds",
            "From the engine seeing a node's last parent succeed to the node's start (executor accepted it), "
            "per virtual cluster; queue wait included",
            ["cluster"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.builds = Counter(
            "aihub_module_builds",
            "Module builds this process ran to the end, by result (BUILT, BUILD_FAILED)",
            ["result"],
            registry=r,
        )
        self.build_duration = Histogram(
            "aihub_module_build_duration_seconds",
            "Duration of module builds run to the end, by result",
            ["result"],
            buckets=BUILD_BUCKETS,
            registry=r,
        )
        self.bus_published = Counter(
            "aihub_bus_published_events",
            "Run events published on the bus, by result (ok, error)",
            ["result"],
            registry=r,
        )
        self.bus_publish = Histogram(
            "aihub_bus_publish_seconds",
            "Time to publish one run event (Kafka: until the broker acknowledged it)",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.bus_lag = Histogram(
            "aihub_bus_delivery_lag_seconds",
            "Kafka: from an event's producer timestamp to its delivery to this process's subscribers",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.http = Histogram(
            "aihub_http_request_duration_seconds",
            "HTTP request duration by method, route template and status (streams: until they end)",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.graphql = Counter(
            "aihub_graphql_operations",
            "GraphQL operations executed, by type and operation name",
            ["type", "operation"],
            registry=r,
        )
        self._operation_names: set[str] = set()
        self._watching_database = False

    def watch_engine(self, engine: Engine) -> None:
        """Report the engine's capacity and queues at every scrape."""
        self.registry.register(_EngineCollector(engine))

    def watch_database(self) -> None:
        """Report the database connection pool (PostgreSQL) at every scrape."""
        if not self._watching_database:
            self._watching_database = True
            self.registry.register(_PoolCollector())

    def labelled(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, looked up once: the engine counts a few of them per node, and
        prometheus_client's ``labels`` checks and converts its arguments on every call."""
        key = (metric, values)
        child = self._labelled.get(key)
        if child is None:
            child = self._labelled[key] = metric.labels(*values)
        return child

    def observe_publish(self, started: float, ok: bool) -> None:
        """One publish on the bus that began at ``started`` (``time.perf_counter``) ended now."""
        self.labelled(self.bus_published, "ok" if ok else "error").inc()
        if ok:
            self.bus_publish.observe(time.perf_counter() - started)

    def operation_label(self, name: str | None) -> str:
        """A bounded label for a client-chosen operation name."""
        if not name:
            return "(anonymous)"
        if not _OPERATION_NAME.fullmatch(name):
            return "(other)"
        if name not in self._operation_names:
            if len(self._operation_names) >= MAX_OPERATION_NAMES:
                return "(other)"
            self._operation_names.add(name)
        return name

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _EngineCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Any]:
        in_use = GaugeMetricFamily(
            "aihub_capacity_in_use",
            "Capacity held by running nodes, per virtual cluster",
            labels=["cluster", "resource"],
        )
        total = GaugeMetricFamily(
            "aihub_capacity_total", "Capacity of each virtual cluster", labels=["cluster", "resource"]
        )
        for name, pool in list(self.engine.capacity.pools.items()):
            size = pool.total
            for resource, used, whole in (
                ("cpu_millis", pool.used_cpu, size.cpu_millis),
                ("memory_mib", pool.used_mem, size.memory_mib),
                ("gpu", pool.used_gpu, size.gpu),
            ):
                in_use.add_metric([name, resource], used)
                total.add_metric([name, resource], whole)
        queued = GaugeMetricFamily(
            "aihub_nodes_queued", "Ready nodes waiting for capacity, per virtual cluster", labels=["cluster"]
        )
        for name, count in sorted(self.engine.queued_by_cluster().items()):
            queued.add_metric([name], count)
        active = GaugeMetricFamily("aihub_active_runs", "Runs this process's engine drives now")
        active.add_metric([], len(self.engine.runs))
        yield from (in_use, total, queued, active)

    def describe(self) -> Iterator[Any]:
        return iter(())


class _PoolCollector(Collector):
    def collect(self) -> Iterator[Any]:
        from tortoise import connections

        try:
            pool = getattr(connections.get("default"), "_pool", None)
        except Exception:  # not initialised (yet, or any more): nothing to report
            pool = None
        if pool is None or not hasattr(pool, "get_size"):  # SQLite: one connection, no pool
            return
        connections_now = GaugeMetricFamily(
            "aihub_db_pool_connections", "Open connections of the database pool, by state", labels=["state"]
        )
        idle = pool.get_idle_size()
        connections_now.add_metric(["in_use"], pool.get_size() - idle)
        connections_now.add_metric(["idle"], idle)
        size = GaugeMetricFamily("aihub_db_pool_max_connections", "Most connections the database pool opens")
        size.add_metric([], pool.get_max_size())
        yield from (connections_now, size)

    def describe(self) -> Iterator[Any]:
        return iter(())


class RequestMetrics:
    """ASGI middleware: the duration of each HTTP request by its route template (never the raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "(unmatched)"
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            self.metrics.labelled(self.metrics.http, method, template, str(status)).observe(
                time.perf_counter() - started
            )


def metrics_endpoint(metrics: Metrics, token: str | None) -> Any:
    """``/metrics``: 404 without ``AIHUB_METRICS_TOKEN``; with it, only for ``Authorization: Bearer <token>``."""
    from starlette.responses import PlainTextResponse, Response  # (the server's: not for ``aihub run``)

    expected = f"Bearer {token}".encode() if token else b""

    async def endpoint(request: Request) -> Response:
        if not token:
            return PlainTextResponse(
                "Not Found (set AIHUB_METRICS_TOKEN to enable /metrics)", status_code=404
            )
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return PlainTextResponse(
                "metrics need Authorization: Bearer <AIHUB_METRICS_TOKEN>",
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return endpoint
