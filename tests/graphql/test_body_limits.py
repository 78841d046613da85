"""Every route has a request-body limit (``AIHUB_MAX_BODY_BYTES``), uploads their own
(``AIHUB_MAX_UPLOAD_BYTES``): 413 with a clear message, declared length or not (issue 11, point 4)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from aihub.db.models import TokenKind
from aihub.domain.status import NodeStatus
from aihub.services.runs import create_run, stop_run
from aihub.services.tokens import issue_token
from aihub.services.workflows import create_workflow
from aihub.settings import Settings
from tests.engine.support import wait_for_node, wait_for_run
from tests.graphql.harness import Server

pytestmark = pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)

LIMIT = 64 * 1024
UPLOAD_LIMIT = 256 * 1024


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.max_body_bytes = LIMIT
    settings.max_upload_bytes = UPLOAD_LIMIT
    return settings


def _query_with(size: int) -> bytes:
    return json.dumps(
        {"query": "query($x: String!) { __type(name: $x) { name } }", "variables": {"x": "v" * size}}
    ).encode()


async def _chunks(total: int, size: int = 16 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


async def test_anonymous_graphql_body_over_the_limit_is_413(server: Server) -> None:
    """The hazard: a 200 MB variable, anonymous, was read into memory whole."""
    response = await server.http.post(
        "/graphql", content=_query_with(LIMIT * 4), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    assert f"limit of {LIMIT} bytes (AIHUB_MAX_BODY_BYTES)" in error["message"]
    # under the limit the same query is answered
    ok = await server.http.post(
        "/graphql", content=_query_with(LIMIT // 2), headers={"Content-Type": "application/json"}
    )
    assert ok.status_code == 200 and ok.json() == {"data": {"__type": None}}


async def test_a_body_without_length_is_cut_at_the_limit(server: Server) -> None:
    """Chunked bodies declare no length: they are counted as they arrive, on every route."""
    await server.http.get("/login")  # a CSRF cookie, so that the login form's body is read at all
    for path, kind in (("/graphql", "application/json"), ("/login", "application/x-www-form-urlencoded")):
        response = await server.http.post(path, content=_chunks(LIMIT * 8), headers={"Content-Type": kind})
        assert response.status_code == 413, path
        assert "AIHUB_MAX_BODY_BYTES" in response.text
    form = await server.http.post(
        "/login",
        content=b"username=a&password=" + b"p" * (LIMIT * 2),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 413
    assert form.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert (await server.http.get("/healthz")).status_code == 200


async def test_uploads_have_their_own_limit(users: Server) -> None:
    alice = users.users["alice"]
    version = await create_workflow(
        alice, {"name": "sleeper", "nodes": [{"name": "s", "command": "sleep 1000"}]}
    )
    run = await create_run(users.rt.bus, alice, version.id)
    await wait_for_node(users.rt, run.id, "s", NodeStatus.RUNNING)
    token, _ = await issue_token(alice.id, TokenKind.RUN, run_id=run.id)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        # over the body limit but under the upload limit: reaches the route (not a valid archive)
        middling = await users.http.post(
            "/artifacts/upload?kind=dir", content=_chunks(LIMIT * 2), headers=headers
        )
        assert middling.status_code == 400, middling.text
        for body in (b"x" * (UPLOAD_LIMIT + 1), _chunks(UPLOAD_LIMIT * 2)):
            big = await users.http.post("/artifacts/upload?kind=dir", content=body, headers=headers)
            assert big.status_code == 413
            assert f"{UPLOAD_LIMIT} bytes (AIHUB_MAX_UPLOAD_BYTES)" in big.text
        assert not list((users.settings.data_dir / "uploads").iterdir())  # nothing left behind
    finally:
        await stop_run(users.rt.bus, alice, run.id)
        await wait_for_run(users.rt, run.id)
