"""Log in, log out, and the header's language switch."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from aihub.domain.messages import Message
from aihub.services.auth import Unauthenticated, login, logout
from aihub.services.ratelimit import TooManyAttempts
from aihub.services.users import set_language
from aihub.web import i18n
from aihub.web.i18n import N_
from aihub.web.render import render
from aihub.web.session import (
    SESSION_COOKIE,
    csrf_ok,
    current_user,
    finish,
    forbidden_csrf,
    prepare_csrf,
    renew_csrf,
    set_cookie,
)

LANG_MAX_AGE = 365 * 24 * 3600
#: the service's refusals the log-in page shows as they are (listed so that the catalogues carry them)
_MESSAGES = (N_("wrong username or password"),)


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
        template = N_("too many failed logins; try again in {seconds} seconds")
        error = Message(template, {"seconds": exc.retry_after}, text=exc.message)
        response = _refused(request, next_url, username, error, 429)
        response.headers["Retry-After"] = str(exc.retry_after)
        return finish(request, response, new_csrf)
    except Unauthenticated as exc:
        return finish(request, _refused(request, next_url, username, exc.message, 401), new_csrf)
    response = RedirectResponse(next_url, status_code=303)
    set_cookie(request, response, SESSION_COOKIE, token, 14 * 24 * 3600)
    renew_csrf(request, token)  # a token known before the login is worth nothing after it
    return finish(request, response, True)


async def logout_page(request: Request) -> Response:
    new_csrf = prepare_csrf(request)
    if not await csrf_ok(request):
        return finish(request, forbidden_csrf(), new_csrf)
    user = await current_user(request)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await logout(token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    renew_csrf(request, "")
    new_csrf = True
    if user is not None and user.language in i18n.LANGUAGES:
        # the log-in page keeps speaking the language the user chose
        set_cookie(request, response, i18n.LANG_COOKIE, user.language, LANG_MAX_AGE)
    return finish(request, response, new_csrf)


async def language_page(request: Request) -> Response:
    """The header's switch: remembered on the user when logged in, and in a cookie for before log-in."""
    new_csrf = prepare_csrf(request)
    if not await csrf_ok(request):
        return finish(request, forbidden_csrf(), new_csrf)
    form = await request.form()
    language = str(form.get("lang", ""))
    next_url = _safe_next(str(form.get("next", "/")))
    if language not in i18n.LANGUAGES:
        return finish(request, PlainTextResponse(f"unknown language {language!r}", status_code=400), new_csrf)
    user = await current_user(request)
    if user is not None:
        await set_language(user, language)
    response = RedirectResponse(next_url, status_code=303)
    set_cookie(request, response, i18n.LANG_COOKIE, language, LANG_MAX_AGE)
    return finish(request, response, new_csrf)


def auth_routes() -> list[BaseRoute]:
    return [
        Route("/login", login_page, methods=["GET", "POST"]),
        Route("/logout", logout_page, methods=["POST"]),
        Route("/language", language_page, methods=["POST"]),
    ]
