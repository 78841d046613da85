"""``/healthz`` (the process lives) and ``/readyz`` (what it depends on answers now) — issue 20."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from tortoise import connections

from aihub import __version__

#: seconds each readiness check may take before it counts as failed
CHECK_TIMEOUT = 5.0


async def health(request: Request) -> Response:
    rt = request.app.state.runtime
    return JSONResponse(
        {
            "status": "ok",
            "version": __version__,
            "role": request.app.state.role,
            "executor": rt.settings.executor,
            "bus": rt.settings.bus,
            "active_runs": len(rt.engine.runs),
        }
    )


async def _database() -> None:
    await connections.get("default").execute_query("SELECT 1")


async def _optional(target: Any) -> None:
    ready = getattr(target, "ready", None)
    if ready is not None:
        await ready()


async def _check(name: str, check: Any) -> tuple[str, str | None]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await check
    except TimeoutError:
        return name, f"no answer within {CHECK_TIMEOUT:g} s"
    except Exception as exc:  # any failure makes the process not ready; the reason is reported
        return name, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return name, None


async def readiness(request: Request) -> Response:
    """200 when the database, the bus and (where runs are driven) the executor answer; 503 naming the failing
    parts otherwise."""
    rt = request.app.state.runtime
    checks = [_check("database", _database()), _check("bus", _optional(rt.bus))]
    if request.app.state.drives_runs:
        checks.append(_check("executor", _optional(rt.executor)))
    results = await asyncio.gather(*checks)
    failing = {name: error for name, error in results if error is not None}
    body: dict[str, Any] = {
        "status": "not ready" if failing else "ready",
        "checks": {name: error or "ok" for name, error in results},
    }
    if failing:
        body["failing"] = sorted(failing)
        body["message"] = "not ready: " + "; ".join(f"{name}: {error}" for name, error in failing.items())
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)
