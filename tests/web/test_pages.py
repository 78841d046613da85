"""Web pages over real HTTP: auth, CSRF, security headers, page vs fragment, validation errors, escaping, SSE."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from webserver import ADMIN_PASSWORD, WebServer, web_server

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server() -> Iterator[WebServer]:
    with web_server() as srv:
        yield srv


@pytest.fixture
def anon(server: WebServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def logged_in(client: httpx.Client) -> tuple[httpx.Client, str]:
    client.get("/login")
    csrf = client.cookies["aihub_csrf"]
    response = client.post(
        "/login", data={"csrf_token": csrf, "username": "admin", "password": ADMIN_PASSWORD, "next": "/"}
    )
    assert response.status_code == 303, response.text
    return client, client.cookies["aihub_csrf"]  # a new one comes with the session


def test_pages_need_a_session(server: WebServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        response = client.get("/workflows")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fworkflows"


def test_session_cookie_flags_and_security_headers(anon: httpx.Client) -> None:
    client = anon
    page = client.get("/login")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-eval" not in csp and "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    meta = re.search(r"<meta name=\"htmx-config\" content='([^']*)'>", page.text)
    assert meta is not None, "the htmx-config meta tag is missing"
    config = json.loads(meta[1])
    assert config["selfRequestsOnly"] is True
    assert config["allowEval"] is False and config["allowScriptTags"] is False
    assert config["includeIndicatorStyles"] is False  # an inline <style> the CSP would block
    # settling never copies style attributes (the CSP blocks them; only extensions or tools add them)
    assert "style" not in config["attributesToSettle"]
    response = client.post(
        "/login",
        data={"csrf_token": client.cookies["aihub_csrf"], "username": "admin", "password": ADMIN_PASSWORD},
    )
    cookie = response.headers["set-cookie"].lower()
    assert "aihub_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie


def test_wrong_password_is_refused(anon: httpx.Client) -> None:
    client = anon
    client.get("/login")
    response = client.post(
        "/login", data={"csrf_token": client.cookies["aihub_csrf"], "username": "admin", "password": "nope"}
    )
    assert response.status_code == 401
    assert "wrong username or password" in response.text
    assert "aihub_session" not in client.cookies


def test_unsafe_requests_need_the_csrf_token(anon: httpx.Client) -> None:
    client, csrf = logged_in(anon)
    spec = (REPO / "examples" / "pass-params-demo.yaml").read_text()
    assert client.post("/workflows/new", data={"spec": spec}).status_code == 403
    wrong = client.post("/workflows/new", data={"spec": spec}, headers={"X-CSRF-Token": "x" + csrf})
    assert wrong.status_code == 403
    assert client.post("/logout").status_code == 403


def test_invalid_spec_shows_the_error_next_to_the_field(anon: httpx.Client) -> None:
    client, csrf = logged_in(anon)
    bad = "name: bad\nnodes:\n  - name: a\n    command: x\n    depends_on: [ghost]\n"
    response = client.post("/workflows/new", data={"spec": bad, "csrf_token": csrf})
    assert response.status_code == 400
    assert 'id="spec-error"' in response.text and "ghost" in response.text


def test_htmx_request_gets_the_fragment_and_values_are_escaped(anon: httpx.Client) -> None:
    client, csrf = logged_in(anon)
    spec = (REPO / "examples" / "pass-params-demo.yaml").read_text().replace("pass-params-demo", "esc-demo")
    created = client.post("/workflows/new", data={"spec": spec, "csrf_token": csrf})
    assert created.status_code == 303
    version = created.headers["location"].rsplit("/", 1)[1]
    run = client.post(
        f"/versions/{version}/run",
        data={"csrf_token": csrf, "name": "<script>x</script>", "param.greeting": ""},
    )
    assert run.status_code == 303
    full = client.get("/runs")
    assert full.text.startswith("<!doctype html>")
    assert "&lt;script&gt;x&lt;/script&gt;" in full.text and "<script>x</script>" not in full.text
    fragment = client.get("/runs", headers={"HX-Request": "true"})
    assert fragment.text.lstrip().startswith('<div id="runs">')
    assert "<html" not in fragment.text


def test_live_endpoint_streams_node_partials(anon: httpx.Client) -> None:
    client, csrf = logged_in(anon)
    spec = (REPO / "examples" / "pass-params-demo.yaml").read_text().replace("pass-params-demo", "sse-demo")
    version = client.post("/workflows/new", data={"spec": spec, "csrf_token": csrf}).headers["location"]
    run = client.post(f"{version}/run", data={"csrf_token": csrf, "name": "sse"}).headers["location"]
    seen: set[str] = set()
    with client.stream("GET", f"{run}/live") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith('data: <svg id="node-') and 'data-status="SUCCEEDED"' in line:
                seen.add(line.split('"')[1])
            if seen == {"node-step1", "node-step2"}:
                break
    assert seen == {"node-step1", "node-step2"}
