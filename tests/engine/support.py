"""Helpers for engine tests: start a run, wait for it (on bus events, with a deadline), read logs."""

from __future__ import annotations

import asyncio
from typing import Any

from aihub.db.models import NodeRun, Run, User
from aihub.domain.status import RunStatus
from aihub.runtime import Runtime
from aihub.services.runs import create_run
from aihub.services.workflows import create_workflow


async def start_run(rt: Runtime, user: User, spec: dict[str, Any] | str, **params: Any) -> Run:
    version = await create_workflow(user, spec)
    return await create_run(rt.bus, user, version.id, params=params)


async def wait_for_run(
    rt: Runtime, run_id: int, *, statuses: set[RunStatus] | None = None, timeout: float = 60
) -> Run:
    """Wait (on bus events, with a deadline) until the run reaches one of ``statuses`` (default: terminal)."""
    wanted = statuses or {s for s in RunStatus if s.is_terminal}
    sub = rt.bus.subscribe(run_id)
    try:
        async with asyncio.timeout(timeout):
            run = await Run.get(id=run_id)
            while run.status not in wanted:
                event = await sub.__anext__()
                if event.node is None:
                    run = await Run.get(id=run_id)
    finally:
        sub.close()
    return run


async def wait_for_node(rt: Runtime, run_id: int, node: str, status: str, *, timeout: float = 60) -> NodeRun:
    sub = rt.bus.subscribe(run_id)
    try:
        async with asyncio.timeout(timeout):
            row = await NodeRun.get(run_id=run_id, name=node)
            while row.status != status:
                await sub.__anext__()
                row = await NodeRun.get(run_id=run_id, name=node)
    finally:
        sub.close()
    return row


async def node_log(rt: Runtime, run_id: int, node: str, attempt: int = 1) -> str:
    data, _ = await rt.logs.read(run_id, node, attempt, 0, 1 << 20)
    return data.decode()
