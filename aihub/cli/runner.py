"""``aihub run FILE -p k=v``: submit a workflow file and follow it until it ends.

Embedded (no ``AIHUB_URL``): runs in this process on the embedded defaults. Status changes and node logs are
printed as they come — plain lines when the output is not a terminal. Exit code 0 on success, 1 otherwise,
with the failing node's last log lines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from aihub.bus.base import RunEvent
from aihub.cli.terminal import printable
from aihub.domain.spec import SpecError, parse_spec
from aihub.domain.status import NodeStatus, RunStatus
from aihub.runtime import Runtime, open_runtime
from aihub.services.errors import ServiceError
from aihub.services.files import failed_node_logs, follow_log
from aihub.services.runs import create_run
from aihub.services.users import ensure_admin, get_admin
from aihub.services.workflows import find_or_create_for_file
from aihub.settings import Settings

if TYPE_CHECKING:
    from aihub.db.models import Run

COLOURS = {
    "RUNNING": "\033[34m",
    "SUCCEEDED": "\033[32m",
    "FAILED": "\033[31m",
    "STOPPED": "\033[33m",
    "SKIPPED": "\033[32m",
}


def parse_params(items: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"parameter {item!r} must look like NAME=VALUE")
        params[key] = value
    return params


class Printer:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty() and not os.environ.get("NO_COLOR")

    def status(self, event: RunEvent) -> None:
        if event.node is None:
            self.line(
                f"run {event.run_id}: {self._c(event.run_status)}"
                + (f" — {event.message}" if event.message else "")
            )
        else:
            count = f" ({event.retry_count})" if event.retry_count else ""
            extra = f" — {event.message}" if event.message else ""
            self.line(f"{event.node}{count}: {self._c(event.node_status or '')}{extra}")

    def log(self, node: str, text: str) -> None:
        self.line(f"{node} | {text}")

    def line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _c(self, status: str) -> str:
        if not self.tty or status not in COLOURS:
            return status
        return f"{COLOURS[status]}{status}\033[0m"


async def follow_run(rt: Runtime, run: Run, printer: Printer) -> Run:
    """Print every status change and log line of ``run`` until it ends; returns the finished run.

    A node's log lines are printed before the line saying how that attempt ended. An attempt's log is followed
    until this run's own events say the attempt ended (no database query per look at the log: with a query
    each, following the logs of a run of short nodes cost as much as running it).
    """
    followers: dict[tuple[str, int], tuple[asyncio.Task[None], asyncio.Event]] = {}
    sub = rt.bus.subscribe(run.id)
    try:
        await run.refresh_from_db()
        while not run.status.is_terminal:
            try:
                event = await asyncio.wait_for(sub.__anext__(), timeout=1.0)
            except TimeoutError:
                await run.refresh_from_db(fields=["status"])
                continue
            if event.node and event.attempt and event.node_status != NodeStatus.RUNNING:
                follower = followers.pop((event.node, event.attempt), None)
                if follower is not None:  # the attempt ended: its log is drained first
                    follower[1].set()
                    await follower[0]
            printer.status(event)
            if event.node and event.node_status == NodeStatus.RUNNING and event.attempt:
                key = (event.node, event.attempt)
                ended = asyncio.Event()
                task = asyncio.create_task(_follow_logs(rt, run.id, *key, printer, ended))
                followers[key] = (task, ended)
            if event.node is None and RunStatus(event.run_status).is_terminal:
                break
        for _, ended in followers.values():  # the run is over, and every attempt with it
            ended.set()
        await asyncio.gather(*(task for task, _ in followers.values()))
    finally:
        sub.close()
        for task, _ in followers.values():
            task.cancel()
    await run.refresh_from_db()
    return run


async def _follow_logs(
    rt: Runtime, run_id: int, node: str, attempt: int, printer: Printer, ended: asyncio.Event
) -> None:
    async def done() -> bool:
        return ended.is_set()

    async for line in follow_log(rt.logs, run_id, node, attempt, done=done, wake=ended):
        printer.log(node, printable(line))  # a log cannot drive the terminal


async def report_failure(rt: Runtime, run: Run, printer: Printer, lines: int = 20) -> None:
    for node, tail in await failed_node_logs(rt.logs, run, lines):
        printer.line(f"node {node.name} failed: {node.message}")
        if tail:
            printer.line(f"last {len(tail)} log lines of {node.name} (attempt {node.attempt}):")
            for text in tail:
                printer.line(f"  {printable(text)}")


async def run_file(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    printer = Printer(out)
    try:
        params = parse_params(args.param)
        source = await asyncio.to_thread(Path(args.file).read_text)
        parse_spec(source)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    printer.line(f"data dir: {settings.data_dir} (set AIHUB_DATA_DIR to change it)")
    async with open_runtime(settings, recover=False) as rt:
        password = await ensure_admin(settings)
        if password:  # the web UI (`make run` on the same data dir) needs it later
            printer.line(f"created user 'admin' with password: {password}")
        user = await get_admin()
        try:
            version = await find_or_create_for_file(user, source)
            run = await create_run(rt.bus, user, version.id, name=args.name, params=params)
        except ServiceError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 2
        printer.line(f"run {run.id} '{run.name}' of {version.workflow.name} v{version.number}")
        run = await follow_run(rt, run, printer)
        if run.status is RunStatus.SUCCEEDED:
            return 0
        await report_failure(rt, run, printer)
        return 1
