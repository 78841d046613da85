"""Fetching a module's source: checks of the git URL and ref, and a shallow, bounded ``git clone``.

A module's URL and ref come from users, and ``git`` is a powerful program, so the values are checked before git
ever sees them and git is told the same rules again:

- only ``https``, ``http`` and ``ssh`` URLs (``file://`` when the administrator allows it) — never
  ``ext::``/``fd::`` transports, scp-like ``host:path`` forms or local paths; ``GIT_ALLOW_PROTOCOL`` makes git
  itself refuse anything else, including on redirects;
- no value may start with ``-`` (it would be read as an option), and ``--`` ends git's options anyway;
- the clone is shallow (``--depth 1``), at one branch or tag, without submodules, never prompts for a password
  (``GIT_TERMINAL_PROMPT=0``) and is killed after a timeout;
- the host must be a public one: a build would otherwise reach the server's own ports and its network (an SSRF
  whose build log tells open ports from closed ones). Loopback, private, link-local, shared and reserved
  addresses are refused — as literals when the module is saved, after resolving the name when it is cloned —
  unless an administrator names the host in ``AIHUB_GIT_ALLOWED_HOSTS``. git connects to the addresses that
  were checked (``http.curloptResolve``) and follows no redirect (``http.followRedirects=false``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
from collections.abc import Callable, Collection
from pathlib import Path
from urllib.parse import urlsplit

from aihub.domain.git import (
    ALLOWED_SCHEMES,
    DEFAULT_PORTS,
    GitError,
    allowed_host,
    check_git_url,
    check_ref,
    internal_address,
    redact_url,
    refusal,
)

__all__ = [
    "ALLOWED_SCHEMES",
    "GitError",
    "check_git_host",
    "check_git_url",
    "check_ref",
    "clone",
    "redact_url",
]


async def check_git_host(url: str, allowed_hosts: Collection[str] = ()) -> tuple[str, int, list[str]] | None:
    """Resolve the URL's host and refuse (:class:`GitError`) if any address is internal; returns the host,
    port and checked addresses to pin the connection to, or None (``file://``, an allowed host)."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in DEFAULT_PORTS or not host or allowed_host(host, allowed_hosts):
        return None
    port = parts.port or DEFAULT_PORTS[scheme]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise GitError(f"the git host {host!r} cannot be resolved: {exc.strerror}") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    for address in addresses:
        if internal_address(address):
            raise refusal(host, address)
    return host, port, addresses


def _pinned(pin: tuple[str, int, list[str]] | None, url: str) -> list[str]:
    """git options: no redirects; for http(s), connect only to the addresses that were checked."""
    options = ["-c", "http.followRedirects=false"]
    if pin is not None and urlsplit(url).scheme.lower() in ("http", "https"):
        host, port, addresses = pin
        listed = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
        options += ["-c", f"http.curloptResolve={host}:{port}:{listed}"]
    return options


def _git_env(allow_file: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_ALLOW_PROTOCOL=":".join((*ALLOWED_SCHEMES, "file") if allow_file else ALLOWED_SCHEMES),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_ASKPASS="/bin/false",
        SSH_ASKPASS="/bin/false",
        GIT_SSH_COMMAND="ssh -o BatchMode=yes",
        LC_ALL="C",
    )
    return env


async def _git(
    args: list[str], *, cwd: Path | None, env: dict[str, str], time_limit: float
) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(time_limit):
            out, _ = await proc.communicate()
    except (TimeoutError, asyncio.CancelledError):
        # the whole group: git's helpers (git-remote-http, ssh) hold the output pipe open too
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


async def clone(
    url: str,
    ref: str,
    dest: Path,
    *,
    allow_file: bool,
    time_limit: float,
    log: Callable[[str], None],
    allowed_hosts: Collection[str] = (),
) -> str:
    """Shallow-clone ``url`` at ``ref`` into ``dest`` (which must not exist); returns the commit SHA."""
    url = check_git_url(url, allow_file=allow_file, allowed_hosts=allowed_hosts)
    ref = check_ref(ref)
    pin = await check_git_host(url, allowed_hosts)
    env = _git_env(allow_file)
    shown = redact_url(url)
    log(f"$ git clone --depth 1 --no-recurse-submodules --branch {ref} -- {shown} {dest.name}")
    args = [*_pinned(pin, url), "clone", "--depth", "1", "--no-recurse-submodules", "--branch", ref]
    args += ["--", url, str(dest)]
    try:
        code, out = await _git(args, cwd=dest.parent, env=env, time_limit=time_limit)
    except TimeoutError:
        raise GitError(f"cloning {shown} took longer than {time_limit:g} seconds and was stopped") from None
    out = out.replace(url, shown)
    for line in out.splitlines():
        log(line)
    if code != 0:
        last = next((ln for ln in reversed(out.splitlines()) if ln.strip()), "")
        hint = f": {last.strip()}" if last else ""
        raise GitError(f"git clone of {shown} at {ref!r} failed (exit code {code}){hint}")
    code, out = await _git(["rev-parse", "HEAD"], cwd=dest, env=env, time_limit=time_limit)
    sha = out.strip()
    if code != 0 or not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", sha):
        raise GitError(f"could not read the commit of the checkout: {sha}")
    log(f"commit {sha}")
    return sha
