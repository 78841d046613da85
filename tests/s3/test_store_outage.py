"""The object store stops (SIGSTOP of moto_server) for 20 s in the middle of a run, then starts again.

With the default patience (``AIHUB_S3_RETRY_SECONDS`` longer than the outage) the uploads wait and retry and
the run succeeds, its artifacts whole; with less patience the node that could not store its output fails with
a message naming the store, and nothing is recorded as its output. The outage lasts 20 s by design (it is
the scenario, not a wait for something): each test starts its own server, so no other test sees it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from aihub.settings import Settings
from aihub.storage import build_storage
from tests.polling import gate_wait
from tests.s3support import CREDENTIALS, S3Server

ROOT = Path(__file__).resolve().parents[2]
SEED_LINES = ["outparam1", "/tmp/outparam2.txt", "/tmp/outparam3", "outparam2", "file1"]
OUTAGE_SECONDS = 20


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[S3Server]:
    for name, value in CREDENTIALS.items():
        os.environ.setdefault(name, value)
    server = S3Server.start(tmp_path / "moto.log")
    try:
        yield server
    finally:
        server.stop()


def _spec(host_dir: Path) -> Path:
    """The seed's example; step1 says it started, then waits at a gate before it writes its outputs."""
    spec = yaml.safe_load((ROOT / "examples" / "pass-params-demo.yaml").read_text())
    step1 = spec["nodes"][0]
    step1["command"] = f'touch "{host_dir / "started"}"; {gate_wait(host_dir / "gate")}\n' + step1["command"]
    path = host_dir / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


async def _run_through_an_outage(
    server: S3Server, host_dir: Path, bucket: str, retry_seconds: int
) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIHUB_")}
    env |= {
        "AIHUB_DATA_DIR": str(host_dir / "data"),
        "AIHUB_ADMIN_PASSWORD": "pw-for-tests",
        "AIHUB_ARTIFACT_STORE": f"s3://{bucket}/aihub",
        "AIHUB_S3_ENDPOINT_URL": server.endpoint,
        "AIHUB_S3_RETRY_SECONDS": str(retry_seconds),
        **CREDENTIALS,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aihub.cli",
        "run",
        str(_spec(host_dir)),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not (host_dir / "started").exists():
            assert proc.returncode is None and loop.time() < deadline, "step1 did not start"
            await asyncio.sleep(0.05)
        server.pause()  # the store stops answering just before step1's outputs are stored
        try:
            (host_dir / "gate").touch()
            await asyncio.sleep(OUTAGE_SECONDS)
        finally:
            server.resume()
        async with asyncio.timeout(120):
            output, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, output.decode(errors="replace")


async def test_a_run_outlives_a_20_s_outage_of_the_store(
    own_server: S3Server, host_dir: Path, tmp_path: Path
) -> None:
    bucket = own_server.bucket()
    code, output = await _run_through_an_outage(own_server, host_dir, bucket, retry_seconds=60)
    assert code == 0, output
    step2 = [line.split(" | ", 1)[1] for line in output.splitlines() if line.startswith("step2 | ")]
    assert step2 == SEED_LINES, output
    # what is stored is whole: every artifact hashes to its digest when read back
    artifacts, _ = build_storage(
        Settings(
            data_dir=tmp_path / "reader",
            artifact_store=f"s3://{bucket}/aihub",
            s3_endpoint_url=own_server.endpoint,
        )
    )
    import obstore

    keys = [m["path"] for batch in obstore.list(artifacts.client, prefix="artifacts/") for m in batch]  # type: ignore[attr-defined]
    assert len(keys) == 2
    for key in keys:
        digest = key.removeprefix("artifacts/").replace("/", "")
        async with artifacts.open(digest) as path:
            assert path.stat().st_size > 0


async def test_a_node_fails_clearly_when_the_store_stays_away_past_the_bound(
    own_server: S3Server, host_dir: Path
) -> None:
    bucket = own_server.bucket()
    code, output = await _run_through_an_outage(own_server, host_dir, bucket, retry_seconds=3)
    assert code == 1, output
    assert "node step1 failed" in output, output
    assert f"object store s3://{bucket}/aihub failed to" in output, output
    assert "AIHUB_S3_RETRY_SECONDS" in output, output
    assert "step2 | " not in output, output  # nothing recorded as step1's output, so step2 never ran
