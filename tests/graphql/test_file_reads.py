"""The access-checked file and log reads (``aihub.services.files``) that the download API, the web pages, GraphQL
and the CLI share: what the caller may not see, what is no longer stored, and a store that does not answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from aihub.db.models import NodeRun
from aihub.domain.status import RunStatus
from aihub.services import files
from aihub.services.errors import NotFound, Unavailable
from aihub.services.runs import create_run
from aihub.services.workflows import create_workflow
from aihub.settings import Settings
from aihub.storage import build_storage
from tests.engine.support import wait_for_run
from tests.graphql.harness import Server

SPEC = {
    "name": "packs",
    "nodes": [
        {
            "name": "a",
            "command": "mkdir -p /tmp/d && echo hi > /tmp/d/f && echo a-log-line",
            "outputs": [{"name": "d", "path": "/tmp/d", "type": "path"}],
        }
    ],
}


async def _finished_run(server: Server) -> tuple[int, str]:
    alice = server.users["alice"]
    version = await create_workflow(alice, SPEC)
    run = await create_run(server.rt.bus, alice, version.id)
    run = await wait_for_run(server.rt, run.id)
    assert run.status is RunStatus.SUCCEEDED
    node = await NodeRun.get(run_id=run.id, name="a")
    return run.id, node.outputs["d"]["digest"]


def _url(run_id: int) -> str:
    return f"/api/runs/{run_id}/nodes/a/outputs/d"


async def test_an_output_no_longer_stored_is_not_found(users: Server) -> None:
    run_id, digest = await _finished_run(users)
    bearer = {"Authorization": f"Bearer {users.tokens['alice']}"}
    assert (await users.http.get(_url(run_id), headers=bearer)).status_code == 200
    users.rt.artifacts.path(digest).unlink()
    gone = await users.http.get(_url(run_id), headers=bearer)
    assert gone.status_code == 404
    assert gone.json()["error"] == {"code": "NOT_FOUND", "message": "the artifact is no longer stored"}
    with pytest.raises(NotFound) as caught:
        await files.output_download(users.rt.artifacts, users.users["alice"], run_id, "a", "d")
    assert caught.value.field == "output"


async def test_a_store_that_does_not_answer_is_unavailable(users: Server, tmp_path: Path) -> None:
    """The hazard: an object store away made the download route fail with an unhandled error (500)."""
    run_id, _ = await _finished_run(users)
    with socket_closed() as port:
        away = Settings(
            data_dir=tmp_path / "d",
            artifact_store="s3://nowhere/p",
            s3_endpoint_url=f"http://127.0.0.1:{port}",
            s3_retry_seconds=1,
        )
        stored, users.rt.artifacts = users.rt.artifacts, build_storage(away)[0]
        try:
            response = await users.http.get(
                _url(run_id), headers={"Authorization": f"Bearer {users.tokens['alice']}"}
            )
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "UNAVAILABLE"
            with pytest.raises(Unavailable, match="s3://nowhere/p"):
                await files.output_download(users.rt.artifacts, users.users["alice"], run_id, "a", "d")
        finally:
            users.rt.artifacts = stored


async def test_log_reads_check_visibility_and_say_when_there_is_no_log(users: Server) -> None:
    run_id, _ = await _finished_run(users)
    alice, carol, logs = users.users["alice"], users.users["carol"], users.rt.logs
    tail = await files.log_tail(logs, alice, run_id, "a", 1, 1024)
    assert tail.lines == ["a-log-line"] and not tail.truncated and tail.attempt.number == 1
    download = await files.log_download(logs, alice, run_id, "a", 1)
    assert download.filename == f"run{run_id}-a-attempt1.log"
    assert b"".join([chunk async for chunk in download.chunks]) == b"a-log-line\n"
    assert [line async for line in files.follow_log(logs, run_id, "a", 1)] == ["a-log-line"]
    for read in (
        files.log_tail(logs, carol, run_id, "a", 1, 1024),
        files.log_download(logs, carol, run_id, "a", 1),
    ):
        with pytest.raises(NotFound):  # another team's run looks missing
            await read
    logs.path(run_id, "a", 1).unlink()
    with pytest.raises(NotFound, match="has no log yet") as caught:
        await files.log_download(logs, alice, run_id, "a", 1)
    assert caught.value.field == "attempt"


class socket_closed:
    """A local port nothing listens on (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None
