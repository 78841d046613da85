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
import ipaddress
import os
import re
import signal
import socket
from collections.abc import Callable, Collection
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

__all__ = ["GitError", "check_git_host", "check_git_url", "check_ref", "clone", "redact_url"]

ALLOWED_SCHEMES = ("https", "http", "ssh")
DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22}
_REF = re.compile(r"[A-Za-z0-9._/+@-]+")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


class GitError(ValueError):
    """A bad URL/ref, or a clone that failed; the message is meant for the module author."""


def redact_url(url: str) -> str:
    """The URL without a password or token, for logs and messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None and not (parts.username and parts.scheme in ("http", "https")):
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def _internal(address: str) -> bool:
    """Not a public internet address: loopback, private, link-local, shared (CGNAT), multicast, reserved."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False  # a name, not an address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _refusal(host: str, address: str) -> GitError:
    shown = host if host == address else f"{host} ({address})"
    return GitError(
        f"the git host {shown} is an internal address (loopback, private, link-local or reserved); modules "
        "are cloned only from public git servers unless an administrator allows the host by name "
        "(AIHUB_GIT_ALLOWED_HOSTS)"
    )


def _allowed(host: str, allowed_hosts: Collection[str]) -> bool:
    return host.lower().rstrip(".") in {h.strip().lower().rstrip(".") for h in allowed_hosts if h.strip()}


async def check_git_host(url: str, allowed_hosts: Collection[str] = ()) -> tuple[str, int, list[str]] | None:
    """Resolve the URL's host and refuse (:class:`GitError`) if any address is internal; returns the host,
    port and checked addresses to pin the connection to, or None (``file://``, an allowed host)."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in DEFAULT_PORTS or not host or _allowed(host, allowed_hosts):
        return None
    port = parts.port or DEFAULT_PORTS[scheme]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise GitError(f"the git host {host!r} cannot be resolved: {exc.strerror}") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    for address in addresses:
        if _internal(address):
            raise _refusal(host, address)
    return host, port, addresses


def _pinned(pin: tuple[str, int, list[str]] | None, url: str) -> list[str]:
    """git options: no redirects; for http(s), connect only to the addresses that were checked."""
    options = ["-c", "http.followRedirects=false"]
    if pin is not None and urlsplit(url).scheme.lower() in ("http", "https"):
        host, port, addresses = pin
        listed = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
        options += ["-c", f"http.curloptResolve={host}:{port}:{listed}"]
    return options


def check_git_url(url: str, *, allow_file: bool, allowed_hosts: Collection[str] = ()) -> str:
    """The URL if git may clone it, else :class:`GitError` saying why (an internal address given as a
    literal is refused here; names are resolved and checked by :func:`check_git_host` before a clone)."""
    url = url.strip()
    if not url:
        raise GitError("the git URL is empty")
    if url.startswith("-"):
        raise GitError("the git URL must not start with '-'")
    if _CONTROL.search(url):
        raise GitError("the git URL must not contain spaces or control characters")
    allowed = (*ALLOWED_SCHEMES, "file") if allow_file else ALLOWED_SCHEMES
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise GitError(
            f"{redact_url(url)!r} is not a URL git may clone here: use https://, http:// or ssh:// "
            "(for example ssh://git@host/group/repo.git instead of git@host:group/repo.git)"
        )
    scheme = scheme.lower()
    if scheme == "file" and not allow_file:
        raise GitError(
            "file:// repositories are disabled on this installation (an administrator can enable them "
            "with AIHUB_ALLOW_FILE_GIT=true)"
        )
    if scheme not in allowed:
        raise GitError(f"git URL scheme {scheme!r} is not allowed; use one of: {', '.join(allowed)}")
    host = urlsplit(url).hostname
    if scheme != "file" and not host:
        raise GitError(f"the git URL {redact_url(url)!r} has no host")
    if host and not _allowed(host, allowed_hosts) and (_internal(host) or host.rstrip(".") == "localhost"):
        raise _refusal(host, host)
    if scheme == "file" and not rest.startswith("/"):
        raise GitError("a file:// URL needs an absolute path, e.g. file:///srv/git/module.git")
    return url


def check_ref(ref: str) -> str:
    """A branch or tag name git accepts, else :class:`GitError`."""
    ref = ref.strip()
    if not ref:
        raise GitError("the branch/tag is empty")
    if ref.startswith("-"):
        raise GitError("the branch/tag must not start with '-'")
    if (
        not _REF.fullmatch(ref)
        or ".." in ref
        or "@{" in ref
        or ref.endswith((".", "/", ".lock"))
        or ref.startswith("/")
        or "//" in ref
        or len(ref) > 255
    ):
        raise GitError(
            f"{ref!r} is not a valid branch or tag name (letters, digits and . _ / + @ -, no '..', "
            "at most 255 characters)"
        )
    return ref


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
