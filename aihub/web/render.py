"""Jinja2 rendering: full pages for navigation, the same partial files for htmx fragments; security headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from aihub.web import i18n

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
STATIC = Path(__file__).resolve().parent / "static"

env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
    extensions=["jinja2.ext.i18n"],
)
env.install_gettext_callables(  # type: ignore[attr-defined]
    gettext=i18n.gettext, ngettext=i18n.ngettext, pgettext=i18n.pgettext, newstyle=True
)
env.globals.update(i18n.template_globals())
env.filters.update(
    datetime=i18n.format_datetime,
    number=i18n.format_number,
    status=i18n.status_label,
    translate=i18n.translate,
)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true" and request.headers.get("hx-boosted") != "true"


def render_string(template: str, **context: Any) -> str:
    return env.get_template(template).render(**context)


def render(
    request: Request,
    page: str,
    context: dict[str, Any],
    *,
    partial: str | None = None,
    status_code: int = 200,
) -> Response:
    """The full ``page`` for a normal request; only ``partial`` (a file the page includes) for htmx."""
    user = getattr(request.state, "user", None)
    i18n.activate(i18n.choose_locale(request, user.language if user else None))
    ctx = {"request": request, "user": user, **context}
    ctx.setdefault("csrf", getattr(request.state, "csrf", ""))
    template = partial if partial and is_htmx(request) else page
    return secure(HTMLResponse(render_string(template, **ctx), status_code=status_code))


def secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _install_globals() -> None:
    from aihub.web import canvas, svg

    env.globals.update(
        CANVAS_H=canvas.CANVAS_H,
        unknown_variables=canvas.unknown_variables,
        NODE_W=svg.NODE_W,
        NODE_H=svg.NODE_H,
        colour=svg.colour,
        label=svg.label,
        icon=svg.icon,
        edge_path=svg.edge_path,
        status_counts=svg.status_counts,
        status_bar=svg.status_bar,
    )


_install_globals()
