"""The GraphQL side of the metrics (:mod:`aihub.metrics`): operations counted by type and name.

Apart from :mod:`aihub.metrics` so that the engine and ``aihub run``, which count what they do there, do not
import Strawberry (about a third of the CLI's start-up).
"""

from __future__ import annotations

from collections.abc import Iterator

from strawberry.extensions import SchemaExtension


class OperationMetrics(SchemaExtension):
    """Counts each GraphQL operation by type and name (in the app's ``Metrics``)."""

    def on_operation(self) -> Iterator[None]:
        yield
        ctx = self.execution_context
        request = getattr(ctx.context, "request", None)
        metrics = getattr(getattr(request, "app", None), "state", None)
        metrics = getattr(metrics, "metrics", None)
        if metrics is None:
            return
        try:
            kind = ctx.operation_type.value
        except Exception:  # not parsed (a syntax error): no type
            kind = "unknown"
        metrics.labelled(metrics.graphql, kind, metrics.operation_label(ctx.operation_name)).inc()
