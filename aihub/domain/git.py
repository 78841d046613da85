"""Checks of a module's git URL and ref (values users give), shared by the services that save modules and the
engine's builds that clone them. Pure: no network, no git (resolving a host is the engine's
``builds/git.check_git_host``).

Only ``https``, ``http`` and ``ssh`` URLs (``file://`` when the administrator allows it) — never ``ext::``/``fd::``
transports, scp-like ``host:path`` forms or local paths; no value may start with ``-``; a host given as an
internal address literal (loopback, private, link-local, shared, reserved) is refused unless an administrator
names it in ``AIHUB_GIT_ALLOWED_HOSTS``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from urllib.parse import urlsplit, urlunsplit

from aihub.domain.messages import msg

__all__ = [
    "ALLOWED_SCHEMES",
    "DEFAULT_PORTS",
    "GitError",
    "allowed_host",
    "check_git_url",
    "check_ref",
    "internal_address",
    "redact_url",
    "refusal",
]

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


def internal_address(address: str) -> bool:
    """Not a public internet address: loopback, private, link-local, shared (CGNAT), multicast, reserved."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False  # a name, not an address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def refusal(host: str, address: str) -> GitError:
    shown = host if host == address else f"{host} ({address})"
    return GitError(
        msg(
            "the git host {host} is an internal address (loopback, private, link-local or reserved); modules "
            "are cloned only from public git servers unless an administrator allows the host by name "
            "(AIHUB_GIT_ALLOWED_HOSTS)",
            host=shown,
        )
    )


def allowed_host(host: str, allowed_hosts: Collection[str]) -> bool:
    return host.lower().rstrip(".") in {h.strip().lower().rstrip(".") for h in allowed_hosts if h.strip()}


def check_git_url(url: str, *, allow_file: bool, allowed_hosts: Collection[str] = ()) -> str:
    """The URL if git may clone it, else :class:`GitError` saying why (an internal address given as a
    literal is refused here; names are resolved and checked by :func:`check_git_host` before a clone)."""
    url = url.strip()
    if not url:
        raise GitError(msg("the git URL is empty"))
    if url.startswith("-"):
        raise GitError(msg("the git URL must not start with '-'"))
    if _CONTROL.search(url):
        raise GitError(msg("the git URL must not contain spaces or control characters"))
    allowed = (*ALLOWED_SCHEMES, "file") if allow_file else ALLOWED_SCHEMES
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise GitError(
            msg(
                "{url} is not a URL git may clone here: use https://, http:// or ssh:// "
                "(for example ssh://git@host/group/repo.git instead of git@host:group/repo.git)",
                url=repr(redact_url(url)),
            )
        )
    scheme = scheme.lower()
    if scheme == "file" and not allow_file:
        raise GitError(
            msg(
                "file:// repositories are disabled on this installation (an administrator can enable them "
                "with AIHUB_ALLOW_FILE_GIT=true)"
            )
        )
    if scheme not in allowed:
        raise GitError(
            msg(
                "git URL scheme {scheme} is not allowed; use one of: {schemes}",
                scheme=repr(scheme),
                schemes=", ".join(allowed),
            )
        )
    host = urlsplit(url).hostname
    if scheme != "file" and not host:
        raise GitError(msg("the git URL {url} has no host", url=repr(redact_url(url))))
    if (
        host
        and not allowed_host(host, allowed_hosts)
        and (internal_address(host) or host.rstrip(".") == "localhost")
    ):
        raise refusal(host, host)
    if scheme == "file" and not rest.startswith("/"):
        raise GitError(msg("a file:// URL needs an absolute path, e.g. file:///srv/git/module.git"))
    return url


def check_ref(ref: str) -> str:
    """A branch or tag name git accepts, else :class:`GitError`."""
    ref = ref.strip()
    if not ref:
        raise GitError(msg("the branch/tag is empty"))
    if ref.startswith("-"):
        raise GitError(msg("the branch/tag must not start with '-'"))
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
            msg(
                "{ref} is not a valid branch or tag name (letters, digits and . _ / + @ -, no '..', "
                "at most 255 characters)",
                ref=repr(ref),
            )
        )
    return ref
