"""Issue 11, point 7: log views are bounded and safe — ``aihub logs`` strips terminal escape sequences, the web
page starts at the log's tail and a live view sends at most a window."""

from __future__ import annotations

import io

import pytest

from aihub.cli.client import Client, print_log, printable
from aihub.db.models import Attempt, NodeRun, Run
from aihub.domain.status import NodeStatus, RunStatus
from aihub.services.workflows import create_workflow
from aihub.web.live import LIVE_WINDOW, LIVE_WINDOW_NOTE
from tests.graphql.harness import Server

pytestmark = [
    pytest.mark.usefixtures("users"),
    pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True),
]

HOSTILE = (
    "plain\x1b[2J\x1b[H\x1b]0;owned\x07\x1b]52;c;ZXZpbA==\x1b\\ title\r\x1b[1Ahidden"
    " \x1bP+q\x1b\\\x9b31mred\x9b0m\x07\x08 中文\tend"
)


def test_printable_strips_escapes_and_controls() -> None:
    assert printable(HOSTILE) == "plain title\nhidden red 中文\tend"
    assert printable("a\r\nb\n") == "a\nb\n"


async def _run_with_log(server: Server, data: bytes, status: NodeStatus) -> Run:
    alice = server.users["alice"]
    version = await create_workflow(alice, {"name": "logged", "nodes": [{"name": "n", "command": "true"}]})
    run = await Run.create(
        version=version,
        workflow_id=version.workflow_id,
        owner=alice,
        name="logged",
        status=RunStatus.RUNNING if status is NodeStatus.RUNNING else RunStatus.SUCCEEDED,
        params={},
    )
    node = await NodeRun.create(run=run, name="n", status=status, attempt=1)
    await Attempt.create(node_run=node, number=1, status=status)
    path = server.rt.logs.path(run.id, "n", 1)
    path.write_bytes(data)
    return run


async def test_aihub_logs_strips_terminal_escapes(users: Server) -> None:
    """The hazard: a node's log could clear the screen, retitle the window, set the clipboard (OSC 52)
    and hide lines on the terminal of whoever ran ``aihub logs``."""
    run = await _run_with_log(users, (HOSTILE + "\n").encode(), NodeStatus.SUCCEEDED)
    out = io.StringIO()
    await print_log(Client(users.url, users.tokens["alice"]), str(run.id), "n", None, out)
    assert out.getvalue() == "plain title\nhidden red 中文\tend\n"


def _log(lines: int) -> bytes:
    return b"".join(f"line {i:07d}\n".encode() for i in range(lines))


async def _page(server: Server, url: str) -> str:
    server.http.cookies.set("aihub_session", server.tokens["alice"])
    response = await server.http.get(url)
    assert response.status_code == 200, response.text
    return response.text


async def test_the_log_tab_starts_at_the_tail(users: Server) -> None:
    """The hazard: the page streamed a 321 MB log from offset 0 as HTML."""
    run = await _run_with_log(users, _log(200_000), NodeStatus.SUCCEEDED)  # 2.6 MB
    page = await _page(users, f"/runs/{run.id}/nodes/n?tab=logs")
    assert "line 0199999" in page and "line 0000000" not in page
    assert "showing the last 256 KiB" in page
    assert len(page) < 1024 * 1024


async def test_a_live_view_sends_at_most_a_window(users: Server) -> None:
    run = await _run_with_log(users, _log(300_000), NodeStatus.RUNNING)  # 3.9 MB, still running
    body = await _page(users, f"/runs/{run.id}/nodes/n/logs/1/live?offset=0")
    assert LIVE_WINDOW_NOTE.replace("'", "&#39;") in body or LIVE_WINDOW_NOTE in body
    lines = body.count('<div class="l">')
    assert lines * len("line 0000000\n") <= LIVE_WINDOW + 100
    assert body.rstrip().endswith("data:") or "event: end" in body
