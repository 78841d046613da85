"""Bounded property-based fuzzing of the web routes that take ids and query strings (issue 22), against a real
``aihub serve`` seeded like the API fuzz (``tests/graphql/fuzzserver.py``): every GET route with a path id, a
node or output name, an attempt, a page, a filter, a tab, a cursor or a ``next``, signed in as the admin and as
a member. A case fails on an HTTP 5xx or a traceback in the server log; anything else (a page, a redirect, a
404, a 400) is an answer.

Values: the seeded ids and names most of the time, else a dictionary of tricky ones (Unicode digits, numbers
past 64 bits, signs, spaces) or anything hypothesis draws. ``AIHUB_FUZZ_EXAMPLES`` (default 30) scales the
number of requests (10 per unit); the default run is derandomized, ``AIHUB_FUZZ_RANDOM=1`` draws new ones.
Streaming routes (``/live``) are left out: they answer with an endless stream, not a page.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.graphql.fuzzserver import PASSWORD, Seed, fuzz_server
from tests.web.webserver import ADMIN_PASSWORD

EXAMPLES = int(os.environ.get("AIHUB_FUZZ_EXAMPLES", "30")) * 10
DERANDOMIZE = os.environ.get("AIHUB_FUZZ_RANDOM", "") in ("", "0")
TRICKY_NUMBERS = ["0", "1", "2", "9223372036854775807", "9223372036854775808", "1" + "0" * 30]
TRICKY_TEXT = ["²", "①", "１", "٣", "-1", "+1", " 1", "1.0", "", "%00", "../x", "a/b", "é😀", "<script>"]
#: (path template, query parameters it reads); ``{run}``-like fields are path parameters
ROUTES: list[tuple[str, tuple[str, ...]]] = [
    ("/runs", ("status", "after", "page", "owner", "workflow", "from", "to")),
    ("/runs/{run}", ()),
    ("/runs/{run}/timeline", ()),
    ("/runs/{run}/groups/{index}", ()),
    ("/runs/{run}/copy", ()),
    ("/runs/{run}/nodes/{node}", ("tab", "attempt")),
    ("/runs/{run}/nodes/{node}/logs/{attempt}/download", ()),
    ("/runs/{run}/nodes/{node}/outputs/{output}/download", ()),
    ("/api/runs/{run}/nodes/{node}/outputs/{output}", ()),
    ("/workflows", ("q", "after", "page", "owner")),
    ("/workflows/new", ("from",)),
    ("/versions/{version}", ()),
    ("/versions/{version}/nodes/{node}", ()),
    ("/versions/{version}/groups/{index}", ()),
    ("/versions/{version}/export.yaml", ()),
    ("/versions/{version}/run", ("copy_of",)),
    ("/versions/{version}/copy", ()),
    ("/versions/{version}/new-version", ()),
    ("/modules", ("q", "category", "status", "page", "owner")),
    ("/modules/{module}", ()),
    ("/modules/{module}/edit", ()),
    ("/modules/{module}/build", ()),
    ("/modules/{module}/builds/{build}/log", ("offset",)),
    ("/reviews", ("status", "page")),
    ("/reviews/{review}", ()),
    ("/admin", ()),
    ("/admin/{section}", ("page",)),
    ("/login", ("next",)),
    ("/artifacts/{digest}", ("run",)),
]


@dataclass
class Browsers:
    seed: Seed
    clients: dict[str, httpx.Client]


def _signed_in(url: str, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60)
    client.get("/login")
    response = client.post(
        "/login",
        data={
            "csrf_token": client.cookies["aihub_csrf"],
            "username": username,
            "password": password,
            "next": "/",
        },
    )
    assert response.status_code == 303, response.text
    return client


@pytest.fixture(scope="module")
def browsers() -> Iterator[Browsers]:
    with fuzz_server() as seed:
        clients = {
            "admin": _signed_in(seed.url, "admin", ADMIN_PASSWORD),
            "alice": _signed_in(seed.url, "alice", PASSWORD),
        }
        seed.new_log()
        try:
            yield Browsers(seed, clients)
        finally:
            for client in clients.values():
                client.close()


def values(seed: Seed) -> dict[str, list[str]]:
    """Seeded values of every path and query parameter."""
    ids = seed.ids
    return {
        "run": ids["run"],
        "version": ids["version"],
        "module": ids["module"],
        "build": ids["build"],
        "review": ids["review"],
        "index": ["0", "1"],
        "node": ["a", "b"],
        "output": ["digest", "out"],
        "attempt": ["0", "1", "2"],
        "section": ["users", "teams", "categories", "clusters", "storages"],
        "digest": ["0" * 64, "f" * 64],
        "status": ["RUNNING", "FAILED", "SUCCEEDED", "PENDING", "BUILT", "running,failed"],
        "after": seed.cursors,
        "page": ["1", "2"],
        "tab": ["io", "details", "logs", "container", "events"],
        "q": ["fuzz", "%"],
        "category": ["data", "c" * 65],
        "owner": ["alice", "admin", "o" * 65],
        "workflow": ["fuzz", "w" * 300],
        "to": ["2020-01-01", "2020-13-45", "9999-12-31"],
        "from": [*ids["version"], "2020-01-01", "0001-01-01"],
        "copy_of": ids["run"],
        "offset": ["0", "10"],
        "next": ["/runs", "//evil.example", "https://evil.example/"],
    }


def parameter(seed: Seed, name: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(values(seed)[name]),
        st.sampled_from(TRICKY_NUMBERS + TRICKY_TEXT),
        st.text(max_size=12),
    )


@st.composite
def requests(draw: Callable[..., Any], seed: Seed) -> tuple[str, str]:
    """(who, URL) of one GET."""
    template, query_names = draw(st.sampled_from(ROUTES))
    path = template
    for name in [part.split("}")[0] for part in template.split("{")[1:]]:
        value = draw(parameter(seed, name))
        if name not in ("node", "output", "section", "digest") and not value.isascii():
            value = draw(st.sampled_from(TRICKY_NUMBERS))  # a path int must match [0-9]+ to route at all
        path = path.replace("{" + name + "}", quote(value, safe=""), 1)
    query = {name: draw(parameter(seed, name)) for name in query_names if draw(st.booleans())}
    who = draw(st.sampled_from(["admin", "alice"]))
    return who, path + ("?" + urlencode(query) if query else "")


def test_web_routes_never_answer_5xx(browsers: Browsers) -> None:
    seed = browsers.seed
    statuses: Counter[int] = Counter()

    @given(request=requests(seed))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=DERANDOMIZE,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(request: tuple[str, str]) -> None:
        who, url = request
        headers = {"Authorization": f"Bearer {seed.admin_token}"} if url.startswith("/api/") else {}
        response = browsers.clients[who].get(url, headers=headers)
        log = seed.new_log()
        statuses[response.status_code] += 1
        assert response.status_code < 500, f"{who} GET {url}: {response.status_code}\n{log[-3000:]}"
        assert "Traceback" not in log, f"{who} GET {url}\n{log[-5000:]}"

    fuzz()
    # the cases reached pages (a lost session would make every answer a redirect to /login)
    assert statuses[200] > sum(statuses.values()) / 4, statuses


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/runs/99999999999999999999", 404),
        ("/runs/9223372036854775808/timeline", 404),
        ("/runs/{run}/nodes/a/logs/9223372036854775808/download", 404),
        ("/runs/{run}/nodes/a?tab=logs&attempt=²", 200),
        ("/runs/{run}/nodes/a?tab=logs&attempt=99999999999999999999", 200),  # the current attempt
        ("/runs?page=²", 200),
        ("/runs?page=99999999999999999999", 200),
        ("/versions/{version}/run?copy_of=²", 200),
        ("/versions/{version}/run?copy_of=99999999999999999999", 200),
        ("/workflows/new?from=version:²", 200),
        ("/modules/9223372036854775808", 404),
        ("/api/runs/9223372036854775808/nodes/a/outputs/x", 404),
        ("/artifacts/{digest}?run=99999999999999999999", 400),
        ("/modules?category=" + "c" * 65, 400),
        ("/runs?owner=" + "o" * 65, 400),
        ("/runs?to=9999-12-31", 200),
    ],
)
def test_numbers_in_urls_past_64_bits_or_not_ascii(browsers: Browsers, url: str, status: int) -> None:
    """Hazard (found by the fuzz above): ``str.isdigit()`` took ``"²"`` (then ``int()`` failed) and ids past
    64 bits overflowed in the database driver: HTTP 500 instead of a page, a 404 or a 400."""
    seed = browsers.seed
    url = url.format(run=seed.ids["run"][0], version=seed.ids["version"][0], digest="0" * 64)
    headers = {"Authorization": f"Bearer {seed.admin_token}"}
    response = browsers.clients["admin"].get(url, headers=headers)
    assert response.status_code == status, (url, response.text[:500])
    assert "Traceback" not in seed.new_log()
