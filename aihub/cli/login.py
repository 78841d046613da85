"""Where the CLI's server is and the token it saved (``aihub login``): ``AIHUB_URL``/``AIHUB_TOKEN``, else the
files in ``$AIHUB_CONFIG_DIR`` (default ``~/.config/aihub``), readable by their owner only.

Apart from the client (:mod:`aihub.cli.client`) because ``aihub run`` asks ``server_url`` first, to choose
between running in-process and submitting to a server: importing the client's HTTP and WebSocket libraries
for that cost a fifth of a small workflow's run (``tests/test_startup.py``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def config_dir() -> Path:
    configured = os.environ.get("AIHUB_CONFIG_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "aihub"


def _read(name: str) -> str | None:
    try:
        return (config_dir() / name).read_text().strip() or None
    except FileNotFoundError:
        return None


def server_url() -> str | None:
    url = os.environ.get("AIHUB_URL") or _read("url")
    return url.rstrip("/") if url else None


def saved_token() -> str | None:
    return os.environ.get("AIHUB_TOKEN") or _read("token")


def save_login(url: str, token: str) -> Path:
    directory = config_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, value in (("url", url), ("token", token)):
        path = directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
        path.chmod(0o600)
    return directory


def forget_login() -> None:
    with contextlib.suppress(FileNotFoundError):
        (config_dir() / "token").unlink()
