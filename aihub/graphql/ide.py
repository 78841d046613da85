"""The GraphiQL page with the web pages' protections: a Content-Security-Policy (scripts only from GraphiQL's
CDN and the page's own inline script, by nonce), no framing (``frame-ancestors 'none'``, ``X-Frame-Options``),
no MIME sniffing, same-origin referrers."""

from __future__ import annotations

import re
import secrets

from starlette.responses import HTMLResponse

#: where Strawberry's GraphiQL page loads React, GraphiQL and its explorer plugin from
IDE_CDN = "https://unpkg.com"

_SCRIPT_TAG = re.compile(r"<script\b", re.IGNORECASE)


def ide_policy(nonce: str) -> str:
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src 'nonce-{nonce}' {IDE_CDN}",
            f"style-src 'self' 'unsafe-inline' {IDE_CDN}",
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
