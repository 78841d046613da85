"""A real ``aihub serve`` in a child process on a free 127.0.0.1 port, for web and browser tests.

Its data dir is under /var/tmp: nodes of the local executor get a private /tmp, so files a test shares with a
node must live elsewhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.polling import until_sync

REPO = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "admin-password-1"


@dataclass
class WebServer:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"aihub serve exited with {process.returncode}")
        try:
            return httpx.get(url + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    until_sync(healthy, "aihub serve to become healthy", timeout=timeout, interval=0.1)


@contextmanager
def web_server(*, setup_code: str = "", **settings: str) -> Iterator[WebServer]:
    """``settings``: extra ``AIHUB_*`` variables, e.g. ``AIHUB_ALLOW_FILE_GIT="true"``; ``setup_code``: Python
    run in the server process before ``aihub serve`` (e.g. cheaper password hashing for tests)."""
    data_dir = Path(tempfile.mkdtemp(prefix="aihub-web-", dir="/var/tmp"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIHUB_")}
    env.update(AIHUB_DATA_DIR=str(data_dir), AIHUB_ADMIN_PASSWORD=ADMIN_PASSWORD, **settings)
    log = (data_dir / "server.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"{setup_code}\nimport sys; from aihub.cli import main; sys.exit(main())",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        yield WebServer(url, data_dir, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        if not os.environ.get("AIHUB_WEB_KEEP_DATA"):
            shutil.rmtree(data_dir, ignore_errors=True)
