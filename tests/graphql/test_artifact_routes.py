"""The artifact routes pods call (Kubernetes executor): run-token scoping, visibility, safe uploads."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from aihub.db.models import NodeRun, TokenKind
from aihub.domain.status import NodeStatus, RunStatus
from aihub.engine.artifacts import pack, sha256_file
from aihub.services.runs import create_run, stop_run
from aihub.services.tokens import issue_token
from aihub.services.workflows import create_workflow
from aihub.settings import Settings
from aihub.storage import build_storage
from tests.engine.support import wait_for_node, wait_for_run
from tests.graphql.harness import Server
from tests.graphql.test_file_reads import socket_closed

SPEC = {
    "name": "packs",
    "nodes": [
        {
            "name": "a",
            "command": "mkdir -p /tmp/d && echo hi > /tmp/d/f",
            "outputs": [{"name": "d", "path": "/tmp/d", "type": "path"}],
        }
    ],
}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _finished_artifact(server: Server) -> tuple[int, str]:
    alice = server.users["alice"]
    version = await create_workflow(alice, SPEC)
    run = await create_run(server.rt.bus, alice, version.id)
    run = await wait_for_run(server.rt, run.id)
    assert run.status is RunStatus.SUCCEEDED
    node = await NodeRun.get(run_id=run.id, name="a")
    return run.id, node.outputs["d"]["digest"]


async def test_download_needs_a_token_and_visibility(users: Server) -> None:
    run_id, digest = await _finished_artifact(users)
    url = f"/artifacts/{digest}"
    assert (await users.http.get(url)).status_code == 401
    assert (await users.http.get(url, headers=_bearer("nonsense"))).status_code == 401
    missing_run = await users.http.get(url, headers=_bearer(users.tokens["alice"]))
    assert missing_run.status_code == 404 and "?run=" in missing_run.json()["error"]
    ok = await users.http.get(f"{url}?run={run_id}", headers=_bearer(users.tokens["alice"]))
    assert ok.status_code == 200
    assert ok.content == users.rt.artifacts.path(digest).read_bytes()
    other = await users.http.get(f"{url}?run={run_id}", headers=_bearer(users.tokens["carol"]))
    assert other.status_code == 404  # another user's run looks missing
    unknown = await users.http.get(
        f"/artifacts/{'0' * 64}?run={run_id}", headers=_bearer(users.tokens["alice"])
    )
    assert unknown.status_code == 404


async def test_run_token_reaches_only_its_own_run_and_uploads(users: Server, tmp_path: Path) -> None:
    _, digest = await _finished_artifact(users)
    alice = users.users["alice"]
    version = await create_workflow(
        alice, {"name": "sleeper", "nodes": [{"name": "s", "command": "sleep 1000"}]}
    )
    run = await create_run(users.rt.bus, alice, version.id)
    await wait_for_node(users.rt, run.id, "s", NodeStatus.RUNNING)
    token, _ = await issue_token(alice.id, TokenKind.RUN, run_id=run.id)
    try:
        foreign = await users.http.get(f"/artifacts/{digest}", headers=_bearer(token))
        assert foreign.status_code == 404  # an artifact of another run

        src = tmp_path / "out"
        (src / "sub").mkdir(parents=True)
        (src / "sub" / "x.txt").write_text("payload")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(src / "sub", arcname="sub")
        up = await users.http.post(
            "/artifacts/upload?kind=dir&output=o", content=buf.getvalue(), headers=_bearer(token)
        )
        assert up.status_code == 200, up.text
        pack(src, tmp_path / "expected.tar.gz")
        assert up.json()["digest"] == sha256_file(tmp_path / "expected.tar.gz")  # same as the local executor

        session = await users.http.post(
            "/artifacts/upload?kind=dir", content=b"x", headers=_bearer(users.tokens["alice"])
        )
        assert session.status_code == 403
        bad_kind = await users.http.post("/artifacts/upload?kind=zip", content=b"x", headers=_bearer(token))
        assert bad_kind.status_code == 400

        evil = io.BytesIO()
        with tarfile.open(fileobj=evil, mode="w:gz") as tar:
            info = tarfile.TarInfo("../escape.txt")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
        refused = await users.http.post(
            "/artifacts/upload?kind=dir", content=evil.getvalue(), headers=_bearer(token)
        )
        assert refused.status_code == 400 and "escape" in refused.json()["error"]
    finally:
        await stop_run(users.rt.bus, alice, run.id)
        await wait_for_run(users.rt, run.id)
    ended = await users.http.get(f"/artifacts/{digest}", headers=_bearer(token))
    assert ended.status_code == 401  # the run token dies with its run


async def test_an_upload_to_a_store_that_does_not_answer_is_unavailable(
    users: Server, tmp_path: Path
) -> None:
    """The store's error while storing an upload is the services' Unavailable: 503 with the store's message."""
    alice = users.users["alice"]
    version = await create_workflow(
        alice, {"name": "sleeper", "nodes": [{"name": "s", "command": "sleep 1000"}]}
    )
    run = await create_run(users.rt.bus, alice, version.id)
    await wait_for_node(users.rt, run.id, "s", NodeStatus.RUNNING)
    token, _ = await issue_token(alice.id, TokenKind.RUN, run_id=run.id)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.txt").write_text("payload")
    pack(tmp_path / "out", tmp_path / "up.tar.gz")
    try:
        with socket_closed() as port:
            away = Settings(
                data_dir=tmp_path / "d",
                artifact_store="s3://nowhere/p",
                s3_endpoint_url=f"http://127.0.0.1:{port}",
                s3_retry_seconds=1,
            )
            stored, users.rt.artifacts = users.rt.artifacts, build_storage(away)[0]
            try:
                up = await users.http.post(
                    "/artifacts/upload?kind=dir",
                    content=(tmp_path / "up.tar.gz").read_bytes(),
                    headers=_bearer(token),
                )
            finally:
                users.rt.artifacts = stored
        assert up.status_code == 503, up.text
        assert "s3://nowhere/p" in up.json()["error"]
    finally:
        await stop_run(users.rt.bus, alice, run.id)
        await wait_for_run(users.rt, run.id)


async def test_executor_events_of_a_local_attempt(users: Server) -> None:
    """The events tab's executor part: Kubernetes events for pods (tests/k8s), none for local processes."""
    run_id, _ = await _finished_artifact(users)
    query = "query($id: ID!) { run(id: $id) { nodes { name executorEvents events { kind } } } }"
    data = await users.gql(query, {"id": str(run_id)}, as_="alice")
    node = data["run"]["nodes"][0]
    assert node["executorEvents"] == []
    assert [e["kind"] for e in node["events"]][:1] == ["started"]
