"""Log in and log out."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from aihub.services.auth import Unauthenticated, login, logout
from aihub.services.ratelimit import TooManyAttempts
from aihub.web.render import render
from aihub.web.session import (
    SESSION_COOKIE,
    csrf_ok,
    finish,
    forbidden_csrf,
    prepare_csrf,
    set_cookie,
)


def _safe_next(value: str) -> str:
    """Only same-site paths: an open redirect would let a link send a user anywhere after logging in."""
    return value if value.startswith("/") and not value.startswith("//") and "\\" not in value else "/"


def _refused(request: Request, next_url: str, username: str, error: str, status: int) -> Response:
    ctx = {"next": next_url, "username": username, "error": error}
    return render(request, "pages/auth/login.html", ctx, status_code=status)


async def login_page(request: Request) -> Response:
    new_csrf = prepare_csrf(request)
    if request.method == "GET":
        ctx = {"next": _safe_next(request.query_params.get("next", "/")), "username": "", "error": None}
        return finish(request, render(request, "pages/auth/login.html", ctx), new_csrf)
    if not await csrf_ok(request):
        return finish(request, forbidden_csrf(), new_csrf)
    form = await request.form()
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    next_url = _safe_next(str(form.get("next", "/")))
    try:
        token, _ = await login(username, password, client=request.client.host if request.client else None)
    except TooManyAttempts as exc:
        response = _refused(request, next_url, username, exc.message, 429)
        response.headers["Retry-After"] = str(exc.retry_after)
        return finish(request, response, new_csrf)
    except Unauthenticated as exc:
        return finish(request, _refused(request, next_url, username, exc.message, 401), new_csrf)
    response = RedirectResponse(next_url, status_code=303)
    set_cookie(request, response, SESSION_COOKIE, token, 14 * 24 * 3600)
    return finish(request, response, new_csrf)


async def logout_page(request: Request) -> Response:
    new_csrf = prepare_csrf(request)
    if not await csrf_ok(request):
        return finish(request, forbidden_csrf(), new_csrf)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await logout(token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return finish(request, response, new_csrf)


def auth_routes() -> list[BaseRoute]:
    return [
        Route("/login", login_page, methods=["GET", "POST"]),
        Route("/logout", logout_page, methods=["POST"]),
    ]
