"""A real S3 HTTP server for the tests: ``moto_server`` (moto[server]) on 127.0.0.1, one per test session.

``S3Server.bucket()`` creates a fresh bucket (so tests share the server but never each other's objects);
``recorded()`` reads the server's own request recorder (moto's ``/moto-api/recorder``), which is how the tests
count the PUTs an upload sent. ``pause()`` / ``resume()`` stop and continue the server process (SIGSTOP /
SIGCONT): the store is "down" in between, its objects kept.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "aihub-test",
    "AWS_SECRET_ACCESS_KEY": "aihub-test-secret",
    "AWS_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _moto_server() -> str:
    beside = Path(sys.executable).parent / "moto_server"
    found = str(beside) if beside.exists() else shutil.which("moto_server")
    if not found:
        raise RuntimeError("moto_server is not installed: `make install-test` installs moto[server]")
    return found


@dataclass
class S3Server:
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    buckets: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, log: Path) -> S3Server:
        port = _free_port()
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [_moto_server(), "-H", "127.0.0.1", "-p", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=log.parent,  # where its request recorder writes its file
            )
        server = cls(port, process, log)
        deadline = time.monotonic() + 30
        while True:
            try:
                server._request("GET", "/", expect_error=True)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    raise RuntimeError(f"moto_server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        return server

    def stop(self) -> None:
        self.resume()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)

    def _request(
        self, method: str, path: str, body: bytes | None = None, *, expect_error: bool = False
    ) -> bytes:
        request = urllib.request.Request(self.endpoint + path, data=body, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            if expect_error:
                return exc.read()
            raise

    def bucket(self) -> str:
        """A new empty bucket (moto accepts unsigned requests)."""
        name = f"aihub-{uuid.uuid4().hex[:12]}"
        self._request("PUT", f"/{name}")
        self.buckets.append(name)
        return name

    def get_raw(self, bucket: str, key: str) -> bytes:
        return self._request("GET", f"/{bucket}/{key}")

    def start_recording(self) -> None:
        self._request("POST", "/moto-api/recorder/reset-recording")
        self._request("POST", "/moto-api/recorder/start-recording")

    def recorded(self) -> list[tuple[str, str]]:
        """(method, path) of every request since ``start_recording``; recording stops."""
        self._request("POST", "/moto-api/recorder/stop-recording")
        raw = self._request("GET", "/moto-api/recorder/download-recording").decode()
        out = []
        for line in raw.splitlines():
            if line.strip():
                entry = json.loads(line)
                out.append((entry["method"], urllib.parse.urlsplit(entry["url"]).path))
        return out
