"""The UI's languages: Babel catalogues, the request's locale, and locale-aware formatting.

Catalogues live in ``aihub/web/locale/<locale>/LC_MESSAGES/messages.po`` (committed) and are compiled to
``messages.mo`` by ``make i18n-compile`` (part of ``make install``); a missing or stale ``.mo`` is compiled
from the ``.po`` in memory when first used, so a fresh checkout works either way.

The locale of a request: the language the user chose in the header (stored on the user; a cookie before
login), else the browser's ``Accept-Language``, else English. It is held in a context variable for the
request's task, so templates and Python code (``gettext``) both see it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import datetime
from functools import cache
from pathlib import Path
from string import Formatter

from babel import Locale
from babel.dates import format_datetime as _format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import Translations
from starlette.requests import Request

from aihub.domain.messages import Message
from aihub.domain.spec import SpecIssue

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"
DEFAULT_LOCALE = "en"
#: the UI's languages, each named in its own language (the header's switch)
LANGUAGES: dict[str, str] = {"zh_CN": "中文", "en": "English"}
LANG_COOKIE = "aihub_lang"

_current: ContextVar[str] = ContextVar("aihub_locale", default=DEFAULT_LOCALE)


def po_path(locale: str) -> Path:
    return LOCALE_DIR / locale / "LC_MESSAGES" / f"{DOMAIN}.po"


@cache
def translations(locale: str) -> Translations:
    """The compiled catalogue of ``locale``: its ``.mo`` when up to date, else compiled from the ``.po``."""
    po = po_path(locale)
    mo = po.with_suffix(".mo")
    if mo.exists() and (not po.exists() or mo.stat().st_mtime >= po.stat().st_mtime):
        with mo.open("rb") as fp:
            return Translations(fp, domain=DOMAIN)
    with po.open("rb") as fp:
        catalog = read_po(fp, locale=locale)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer, domain=DOMAIN)


def activate(locale: str) -> None:
    """Make ``locale`` the language of the current request (task)."""
    _current.set(locale if locale in LANGUAGES else DEFAULT_LOCALE)


def current_locale() -> str:
    return _current.get()


def html_lang(locale: str | None = None) -> str:
    """The BCP 47 tag for ``<html lang>``: ``zh-CN``, ``en``."""
    return (locale or current_locale()).replace("_", "-")


def negotiate(accept_language: str | None) -> str | None:
    """The best UI language for an ``Accept-Language`` header, or None when it asks for none of ours."""
    wanted: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, rest = part.strip().partition(";")
        quality = 1.0
        if rest.strip().startswith("q="):
            try:
                quality = float(rest.strip()[2:])
            except ValueError:
                continue
        if tag and quality > 0:
            wanted.append((-quality, position, tag.strip().lower()))
    for _, _, tag in sorted(wanted):
        language = tag.split("-")[0]
        if language == "zh":
            return "zh_CN"
        if language == "en":
            return "en"
    return None


def choose_locale(request: Request, chosen: str | None = None) -> str:
    """The user's own choice (``chosen``), else the cookie set before login, else the browser's wish."""
    if chosen in LANGUAGES:
        return chosen
    cookie = request.cookies.get(LANG_COOKIE)
    if cookie in LANGUAGES:
        return cookie
    return negotiate(request.headers.get("accept-language")) or DEFAULT_LOCALE


def N_(message: str) -> str:
    """Marks ``message`` for extraction; it is translated where it is shown (``_(...)`` in a template)."""
    return message


#: a title per error code (GraphQL's ``extensions.code``, a service error's ``code``), shown before the message
ERROR_TITLES: dict[str, str] = {
    "NOT_FOUND": N_("Not found."),
    "FORBIDDEN": N_("Not allowed."),
    "INVALID_INPUT": N_("Invalid input."),
    "CONFLICT": N_("Not possible now."),
    "UNAUTHENTICATED": N_("Please log in."),
    "RATE_LIMITED": N_("Too many attempts."),
    "ERROR": N_("Something went wrong."),
}


def NC_(context: str, message: str) -> str:
    """Marks ``message`` in ``context`` for extraction (``pgettext`` translates it where it is shown)."""
    return message


#: what the engine and the run services write into run and node messages and events. They are stored as
#: English text (tools read them); the UI translates a stored text by matching it against these templates.
#: tests/web/test_i18n.py runs a workflow and checks that its messages come out in Chinese.
STORED_MESSAGES = (
    N_("created"),
    N_("started"),
    N_("stopped"),
    N_("stopped by user"),
    N_("stopped by {user}"),
    N_("stop requested by {user}"),
    N_("all nodes succeeded"),
    N_("exited with code {code}"),
    N_("attempt {attempt}"),
    N_("attempt {attempt} (retry {retry})"),
    N_("attempt {attempt} failed ({reason}); retrying"),
    N_("retry {count}"),
    N_("retry {count} by {user}"),
    N_("not run: node {node} failed"),
    N_("node {node} failed: {reason}"),
    N_("cache hit: outputs of run {run} node {node}"),
    N_("{name}: {value} packed ({size} bytes, sha256 {digest})"),
    N_("{name}: text ({count} characters)"),
    # what executors report in the container tab
    N_("running"),
    N_("ended: {reason}"),
    N_("failed to start: {reason}"),
    N_("exited with code {code} (stopped)"),
    N_("process vanished (server or host restarted?)"),
    N_("mount namespace: private {paths}"),
    N_("PID namespace: own /proc, leftovers killed at exit"),
    N_("hidden: {paths}"),
    N_("runs as uid {uid}, gid {gid}"),
    N_("none ({reason})"),
    # the container executor's states and failures
    N_("created"),
    N_("removed"),
    N_("(the image's)"),
    N_("{engine} could not create the container: {reason}"),
    N_("the container did not start: {reason}"),
    N_("the container vanished (removed outside AIHub, or the engine's storage was reset)"),
    N_(
        "out of memory: the container was killed at its memory limit of {memory} MiB (the task type's memory); "
        "choose a task type with more memory"
    ),
    N_(
        "the node asks for {count} GPU(s) but this host has none (no /dev/nvidia* device, no CDI specification "
        "in /etc/cdi or /var/run/cdi)"
    ),
)
#: the facts of the container tab (executors' ``describe``)
CONTAINER_FACTS = (
    NC_("container", "executor"),
    NC_("container", "host"),
    NC_("container", "pid"),
    NC_("container", "pgid"),
    NC_("container", "isolation"),
    NC_("container", "state"),
    NC_("container", "scratch"),
    NC_("container", "argv"),
    NC_("container", "workdir"),
    NC_("container", "env"),
    NC_("container", "resources"),
    NC_("container", "started_at"),
    NC_("container", "pod"),
    NC_("container", "namespace"),
    NC_("container", "node"),
    NC_("container", "phase"),
    NC_("container", "image"),
    NC_("container", "host_ip"),
    NC_("container", "pod_ip"),
    NC_("container", "engine"),
    NC_("container", "container"),
    NC_("container", "container_id"),
    NC_("container", "image_id"),
    NC_("container", "network"),
    NC_("container", "exit_code"),
    NC_("container", "oom_killed"),
    NC_("container", "limits"),
    NC_("container", "engine_started_at"),
    NC_("container", "engine_finished_at"),
    NC_("container", "error"),
)
#: the kinds of node events (the events tab)
EVENT_KINDS = (
    NC_("event", "started"),
    NC_("event", "exited"),
    NC_("event", "failed"),
    NC_("event", "not_run"),
    NC_("event", "reset"),
    NC_("event", "retry"),
    NC_("event", "run_retry"),
    NC_("event", "stopped"),
    NC_("event", "cache_hit"),
    NC_("event", "output_stored"),
)
#: a review's statuses (PENDING is 待审核 there, not 等待中)
REVIEW_STATUS_NAMES = (NC_("review", "PENDING"), NC_("review", "APPROVED"), NC_("review", "REJECTED"))


#: a spec issue as the UI shows it (where, then what), and the locations that are words, not names
SPEC_ISSUE = N_("{field}: {message}")
SPEC_LOCATIONS = (N_("document"), N_("workflow"))


def error_title(code: str | None) -> str:
    return gettext(ERROR_TITLES.get(code or "ERROR", ERROR_TITLES["ERROR"]))


def gettext(message: str) -> str:
    return translations(current_locale()).ugettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(current_locale()).ungettext(singular, plural, n)


def pgettext(context: str, message: str) -> str:
    return translations(current_locale()).upgettext(context, message)


@cache
def _templates(locale: str) -> list[tuple[re.Pattern[str], str]]:
    """The catalogue's messages with ``{name}`` placeholders as patterns over English text."""
    patterns = []
    for msgid in translations(locale)._catalog:  # the compiled catalogue's messages (GNUTranslations)
        if not isinstance(msgid, str) or "{" not in msgid or "\x04" in msgid:
            continue
        seen: set[str] = set()
        regex = ""
        for literal, name, _, _ in Formatter().parse(msgid):
            regex += re.escape(literal)
            if name:
                # a value never spans "; ": that separates the parts of a composed text (see below)
                regex += f"(?P={name})" if name in seen else f"(?P<{name}>(?:(?!; ).)+?)"
                seen.add(name)
        try:
            patterns.append((re.compile(regex, re.DOTALL), msgid))
        except re.error:
            continue
    # the most specific first: the one with the most literal text ("hidden: {paths}" before "{field}: {message}")
    return sorted(patterns, key=lambda item: -len(re.sub(r"\{\w+\}", "", item[1])))


def _translate_text(text: str) -> str:
    """A stored English text: the catalogue's translation of the message it was made from, else as it is."""
    exact = gettext(text)
    if exact != text or current_locale() == DEFAULT_LOCALE:
        return exact
    for pattern, msgid in _templates(current_locale()):
        match = pattern.fullmatch(text)
        if match:
            params = {k: _translate_text(v) for k, v in match.groupdict().items()}
            return gettext(msgid).format(**params)
    if "; " in text:  # facts joined by "; " (the container tab's isolation): each part on its own
        return "；".join(_translate_text(part) for part in text.split("; "))
    return text


def event_kind(kind: str) -> str:
    return pgettext("event", kind)


def review_status(status: object) -> str:
    return pgettext("review", str(getattr(status, "value", status)))


def translate(message: object) -> str:
    """A message of the core in the current language: a :class:`Message` by its template, else the text itself
    when the catalogue has it (messages without arguments), else as it is."""
    if isinstance(message, SpecIssue):
        return gettext(SPEC_ISSUE).format(
            field=translate(message.location), message=translate(message.message)
        )
    if isinstance(message, Message):
        translated = gettext(message.template)
        if translated == message.template:
            return str(message)  # English, or not translated: the message as the core wrote it
        params = {k: translate(v) if isinstance(v, Message) else v for k, v in message.params.items()}
        return translated.format(**params)
    text = str(message)
    return _translate_text(text) if text else text


#: every status the UI shows (runs, nodes, modules, builds, reviews); the msgid is the status itself
STATUS_NAMES = (
    N_("PENDING"),
    N_("WAITING"),
    N_("RUNNING"),
    N_("SUCCEEDED"),
    N_("FAILED"),
    N_("STOPPING"),
    N_("STOPPED"),
    N_("SKIPPED"),
    N_("BUILDING"),
    N_("BUILT"),
    N_("BUILD_FAILED"),
    N_("PENDING_REVIEW"),
    N_("PUBLISHED"),
    N_("REJECTED"),
    N_("APPROVED"),
)


def status_label(status: object) -> str:
    """A status (run, node, module, build, review) as the UI names it: 成功, 运行中 … (en: SUCCEEDED …)."""
    return gettext(str(getattr(status, "value", status)))


def format_datetime(value: datetime | None, form: str = "medium") -> str:
    """A timestamp per locale: ``form`` is a Babel width (short, medium) or ``time`` for the time of day."""
    if value is None:
        return ""
    locale = Locale.parse(current_locale())
    if form == "time":
        return _format_datetime(value, locale.time_formats["medium"].pattern, locale=locale)
    return _format_datetime(value, form, locale=locale)


def format_number(value: float | int | None) -> str:
    return "" if value is None else format_decimal(value, locale=current_locale())


def template_globals() -> Mapping[str, object]:
    """What templates use besides ``_``/``ngettext``/``pgettext`` (installed by Jinja2's i18n extension)."""
    return {
        "LANGUAGES": LANGUAGES,
        "current_locale": current_locale,
        "error_title": error_title,
        "event_kind": event_kind,
        "review_status": review_status,
        "html_lang": html_lang,
        "status_label": status_label,
        "translate": translate,
    }
