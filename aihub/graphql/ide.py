"""The GraphiQL page with the web pages' protections: a Content-Security-Policy (scripts only by nonce: the
page's own, and React, GraphiQL and its explorer plugin from the package's static files — vendored, so the page
works without internet), no framing (``frame-ancestors 'none'``, ``X-Frame-Options``), no MIME sniffing,
same-origin referrers."""

from __future__ import annotations

import re
import secrets
from functools import cache
from pathlib import Path

from starlette.responses import HTMLResponse

#: the page: Strawberry's GraphiQL page loading its scripts from aihub/web/static/graphiql instead of unpkg
IDE_PAGE = Path(__file__).with_name("graphiql.html")

_SCRIPT_TAG = re.compile(r"<script\b", re.IGNORECASE)


@cache
def ide_html() -> str:
    return IDE_PAGE.read_text(encoding="utf-8")


def ide_policy(nonce: str) -> str:
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src 'nonce-{nonce}'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def secure_ide_page(html: str) -> HTMLResponse:
    """The page with a fresh nonce on each of its scripts, and the headers that go with it."""
    nonce = secrets.token_urlsafe(16)
    page = _SCRIPT_TAG.sub(f'<script nonce="{nonce}"', html)
    return HTMLResponse(
        page,
        headers={
            "Content-Security-Policy": ide_policy(nonce),
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store",
        },
    )
