"""Web sessions and CSRF.

The session cookie holds a session token from ``aihub.services.auth.login`` (HttpOnly, SameSite=Lax). CSRF is a
double-submit token: a random value in its own HttpOnly cookie that every unsafe request must repeat in the
``csrf_token`` form field or the ``X-CSRF-Token`` header (htmx sends it via ``hx-headers`` on ``<body>``).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from functools import wraps
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from aihub.db.models import User
from aihub.services.auth import WEB_SESSION_KINDS, authenticate
from aihub.services.errors import ServiceError
from aihub.web import i18n
from aihub.web.render import is_htmx, render, secure

SESSION_COOKIE = "aihub_session"
CSRF_COOKIE = "aihub_csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Handler = Callable[[Request, User], Awaitable[Response]]


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )


def prepare_csrf(request: Request) -> bool:
    """Put the request's CSRF token on ``request.state``; True when a new one must be set as a cookie."""
    token = request.cookies.get(CSRF_COOKIE)
    request.state.csrf = token or secrets.token_urlsafe(32)
    return token is None


async def csrf_ok(request: Request) -> bool:
    if request.method in SAFE_METHODS:
        return True
    expected = request.cookies.get(CSRF_COOKIE)
    given = request.headers.get("x-csrf-token")
    if given is None:
        form = await request.form()
        value = form.get("csrf_token")
        given = value if isinstance(value, str) else None
    return bool(expected and given and secrets.compare_digest(expected, given))


def finish(request: Request, response: Response, new_csrf: bool) -> Response:
    if new_csrf:
        set_cookie(request, response, CSRF_COOKIE, request.state.csrf, None)
    return secure(response)


async def current_user(request: Request) -> User | None:
    token = request.cookies.get(SESSION_COOKIE)
    return await authenticate(token, WEB_SESSION_KINDS) if token else None


def redirect(request: Request, url: str) -> Response:
    """A redirect that also works for htmx requests (which would otherwise swap the target page in)."""
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def forbidden_csrf() -> Response:
    text = i18n.gettext("CSRF token missing or wrong; reload the page and try again.")
    return HTMLResponse(text, status_code=403)


def error_page(request: Request, exc: ServiceError) -> Response:
    status = {"NOT_FOUND": 404, "FORBIDDEN": 403, "CONFLICT": 409}.get(exc.code, 400)
    return render(
        request, "pages/error.html", {"error": exc}, partial="partials/error.html", status_code=status
    )


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A route for a logged-in user: CSRF checked on unsafe methods; service errors become error pages."""

    @wraps(handler)
    async def endpoint(request: Request) -> Response:
        new_csrf = prepare_csrf(request)
        user = await current_user(request)
        if user is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return finish(request, redirect(request, f"/login?next={quote(target, safe='')}"), new_csrf)
        i18n.activate(i18n.choose_locale(request, user.language))
        if not await csrf_ok(request):
            return finish(request, forbidden_csrf(), new_csrf)
        request.state.user = user
        try:
            response = await handler(request, user)
        except ServiceError as exc:
            response = error_page(request, exc)
        return finish(request, response, new_csrf)

    return endpoint
