"""The container engine's CLI (podman or docker), as the container executor uses it: one process per verb.

:func:`find_engine_cli` picks the engine (``auto``: podman, else docker); :class:`EngineCli` runs its verbs
with a deadline, reads ``inspect`` data, and copies a path out of a container (``cp CTR:PATH -``, a tar
stream, bounded). Why the CLI and not the REST socket: see :mod:`aihub.engine.executors.container`.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["EngineCli", "find_engine_cli", "tail"]

_OUTPUT_CAP = 64 * 1024**3  # most bytes copied out for one path output


def find_engine_cli(choice: str) -> tuple[str, str]:
    """(engine name, absolute CLI path) for ``auto|podman|docker``; raises RuntimeError when missing."""
    names = ["podman", "docker"] if choice == "auto" else [choice]
    for name in names:
        cli = shutil.which(name)
        if cli is not None:
            return name, cli
    wanted = "podman or docker" if choice == "auto" else choice
    raise RuntimeError(f"AIHUB_EXECUTOR=container: no container engine found ({wanted} is not installed)")


class EngineCli:
    """The engine's CLI once found (``engine`` and ``cli`` are empty until then)."""

    def __init__(self) -> None:
        self.engine = ""  # podman | docker
        self.cli = ""  # its absolute path

    async def verb(
        self, *args: str, within: float | None = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``cli ARGS...``; RuntimeError when it fails (with ``check``) or does not answer ``within`` seconds."""
        return await self.run([self.cli, *args], within=within, check=check)

    async def run(
        self,
        argv: list[str],
        *,
        within: float | None,
        check: bool,
        stdin: Any = subprocess.DEVNULL,
        merge: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge else subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(within):
                out, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"`{' '.join(argv[:3])} ...` did not answer within {within} s") from None
        result = subprocess.CompletedProcess(
            argv, proc.returncode or 0, out.decode(errors="replace"), (err or b"").decode(errors="replace")
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"`{' '.join(argv[:3])} ...` failed: {tail(result.stderr)}")
        return result

    async def inspect(self, name: str) -> dict[str, Any] | None:
        """The container's inspect data; None when the engine does not know it."""
        proc = await self.verb("container", "inspect", name, check=False, within=60)
        if proc.returncode != 0:
            return None
        try:
            found = json.loads(proc.stdout)
        except ValueError:
            return None
        return found[0] if isinstance(found, list) and found else None

    async def inspect_many(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """name -> inspect data of those of ``names`` the engine knows (one process for all)."""
        if not names:
            return {}
        proc = await self.verb("container", "inspect", *names, check=False, within=120)
        try:
            found = json.loads(proc.stdout or "[]")
        except ValueError:
            return {}
        return {str(c.get("Name", "")).lstrip("/"): c for c in found if isinstance(c, dict)}

    async def remove(self, *names: str, within: float = 120) -> None:
        await self.verb("rm", "-f", "-v", *names, check=False, within=within)

    async def copy_out(self, name: str, path: str, dest: Path) -> None:
        """``cp CTR:PATH -`` (a tar stream) unpacked under ``dest``; a missing path leaves nothing there."""
        proc = await asyncio.create_subprocess_exec(
            self.cli,
            "cp",
            f"{name}:{path}",
            "-",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        with tempfile.TemporaryFile(dir=dest) as spool:
            size = 0
            while chunk := await proc.stdout.read(1 << 20):
                size += len(chunk)
                if size > _OUTPUT_CAP:
                    proc.kill()
                    break
                spool.write(chunk)
            await proc.wait()
            if proc.returncode != 0 or size > _OUTPUT_CAP:
                return
            spool.seek(0)
            await asyncio.to_thread(_extract_tar, spool, dest)


def _extract_tar(stream: Any, dest: Path) -> None:
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        tar.extractall(dest, filter="data")


def tail(text: str, limit: int = 500) -> str:
    """The end of an engine's message, short enough for a log line or an error."""
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]
