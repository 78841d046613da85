"""Web sessions and CSRF.

The session cookie holds a session token from ``aihub.services.auth.login`` (HttpOnly, SameSite=Lax). CSRF is a
double-submit token: a value in its own HttpOnly cookie that every unsafe request must repeat in the
``csrf_token`` form field or the ``X-CSRF-Token`` header (htmx sends it via ``hx-headers`` on ``<body>``).
Only tokens this server issued count: a token is a random nonce signed (HMAC-SHA256, ``AIHUB_SECRET_KEY`` or a
per-process key) together with the session it belongs to, so a cookie planted by someone else (a sibling
site, a proxy) or one issued before the login is refused; a login issues a new one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from tortoise.exceptions import ValidationError

from aihub.domain.ids import in_row_id_range
from aihub.domain.messages import msg
from aihub.services.auth import WEB_SESSION_KINDS, authenticate
from aihub.services.errors import InvalidInput, NotFound, ServiceError
from aihub.web import i18n
from aihub.web.render import is_htmx, render, secure

if TYPE_CHECKING:
    from aihub.db.models import User

SESSION_COOKIE = "aihub_session"
CSRF_COOKIE = "aihub_csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Handler = Callable[[Request, "User"], Awaitable[Response]]


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


def _csrf_key(request: Request) -> bytes:
    state = request.app.state
    key: bytes | None = getattr(state, "csrf_key", None)
    if key is None:
        secret = request.app.state.runtime.settings.secret_key
        key = hashlib.sha256(b"aihub-csrf\0" + secret.encode()).digest() if secret else None
        key = key or secrets.token_bytes(32)
        state.csrf_key = key
    return key


def _signature(request: Request, nonce: str, session: str) -> str:
    message = f"{nonce}\0{hashlib.sha256(session.encode()).hexdigest()}".encode()
    return hmac.new(_csrf_key(request), message, hashlib.sha256).hexdigest()


def new_csrf_token(request: Request, session: str | None = None) -> str:
    """A token for the session ``session`` (default: the request's session cookie; "" before a login)."""
    session = request.cookies.get(SESSION_COOKIE, "") if session is None else session
    nonce = secrets.token_urlsafe(24)
    return f"{nonce}.{_signature(request, nonce, session)}"


def _issued_here(request: Request, token: str | None) -> bool:
    """The token was issued by this server, for the request's session."""
    if not token:
        return False
    nonce, _, signature = token.rpartition(".")
    expected = _signature(request, nonce, request.cookies.get(SESSION_COOKIE, ""))
    return bool(nonce) and secrets.compare_digest(signature, expected)


def prepare_csrf(request: Request) -> bool:
    """Put the request's CSRF token on ``request.state``; True when a new one must be set as a cookie (none,
    or one this server did not issue for this session)."""
    token = request.cookies.get(CSRF_COOKIE)
    if _issued_here(request, token):
        request.state.csrf = token
        return False
    request.state.csrf = new_csrf_token(request)
    return True


def renew_csrf(request: Request, session: str) -> None:
    """A new token for a session that starts (log-in) or ends (log-out, ``session`` ""): set by ``finish``."""
    request.state.csrf = new_csrf_token(request, session)


#: how many fields one form post may have (starlette allows 1,000 by default): the editor posts a dozen per node
#: of a draft of hundreds; the request body limit (``aihub.bodylimit``) still bounds what a post may hold
MAX_FORM_FIELDS = 500_000


async def csrf_ok(request: Request) -> bool:
    if request.method in SAFE_METHODS:
        return True
    expected = request.cookies.get(CSRF_COOKIE)
    if not _issued_here(request, expected):
        return False
    given = request.headers.get("x-csrf-token")
    if given is None:
        form = await request.form(max_fields=MAX_FORM_FIELDS)  # parsed once: the route gets this same form
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
    status = {"NOT_FOUND": 404, "FORBIDDEN": 403, "CONFLICT": 409, "UNAVAILABLE": 503}.get(exc.code, 400)
    return render(
        request, "pages/error.html", {"error": exc}, partial="partials/error.html", status_code=status
    )


#: what a number in the path names, for the refusal of one past 64 bits
_PATH_NUMBERS = {
    "run_id": msg("run"),
    "version_id": msg("version"),
    "workflow_id": msg("workflow"),
    "module_id": msg("module"),
    "build_id": msg("build"),
    "review_id": msg("review"),
    "attempt": msg("attempt"),
    "index": msg("group"),
}


def check_path_numbers(request: Request) -> None:
    """An id, attempt or index in the path past 64 bits names nothing (``aihub.domain.ids``): not found."""
    for name, value in request.path_params.items():
        if isinstance(value, int) and not in_row_id_range(value):
            what = _PATH_NUMBERS.get(name, name.removesuffix("_id"))
            raise NotFound(msg("no {what} {value}", what=what, value=value), field=name)


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
            check_path_numbers(request)
            response = await handler(request, user)
        except ServiceError as exc:
            response = error_page(request, exc)
        except ValidationError as exc:  # the database refused a value of the request (too long for a filter)
            response = error_page(request, InvalidInput(str(exc)[:300]))
        return finish(request, response, new_csrf)

    return endpoint
