"""What the executor that ran an attempt tells about it: the container tab's view (process or pod, image, host,
resources, state) and the events tab's executor events (Kubernetes events of a pod), for web, GraphQL and the
CLI alike. The engine answers through :class:`AttemptViews`, wired in ``aihub.runtime``."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from aihub.domain.messages import msg
from aihub.services.errors import Unavailable

log = logging.getLogger("aihub.services")


class ExecutorUnavailable(Unavailable):
    """The executor cannot tell about an attempt now; ``reason`` is what it said."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

    def details(self) -> dict[str, object]:
        return {"reason": self.reason}


class AttemptViews(Protocol):
    """The executor's view of one attempt, found by the executor's handle (the attempt's ``handle`` JSON)."""

    async def describe(self, handle: dict[str, Any]) -> dict[str, Any]: ...

    async def executor_events(self, handle: dict[str, Any]) -> list[dict[str, Any]]: ...


async def describe_attempt(views: AttemptViews, handle: dict[str, Any] | None) -> dict[str, Any]:
    """The executor's view of an attempt ({} for one that never started); :class:`Unavailable` when the
    executor cannot describe it (it may no longer know it, or its cluster does not answer)."""
    if not handle:
        return {}
    try:
        return await views.describe(handle)
    except Exception as exc:
        log.warning("describe of attempt %s failed: %s", handle, exc)
        raise ExecutorUnavailable(
            msg("the executor cannot describe this attempt: {reason}", reason=str(exc)), str(exc)
        ) from exc


async def attempt_executor_events(views: AttemptViews, handle: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The executor's own events of an attempt ([] for local processes and attempts that never started);
    :class:`Unavailable` when the executor cannot list them."""
    if not handle:
        return []
    try:
        return await views.executor_events(handle)
    except Exception as exc:
        log.warning("events of attempt %s failed: %s", handle, exc)
        message = msg("the executor cannot list the events of this attempt: {reason}", reason=str(exc))
        raise ExecutorUnavailable(message, str(exc)) from exc
