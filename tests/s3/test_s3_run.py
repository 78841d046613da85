"""The seed's example run end to end with ``AIHUB_ARTIFACT_STORE=s3://…`` on a real S3 server (moto_server):
the path outputs live in the bucket, not in the data dir, and each attempt's log is archived there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import obstore

from aihub.settings import Settings
from aihub.storage import build_storage
from tests.s3support import S3Server

ROOT = Path(__file__).resolve().parents[2]
SEED_LINES = ["outparam1", "/tmp/outparam2.txt", "/tmp/outparam3", "outparam2", "file1"]


def test_the_seed_example_keeps_artifacts_and_logs_in_the_bucket(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.bucket()
    env = {
        **os.environ,
        "AIHUB_DATA_DIR": str(tmp_path / "data"),
        "AIHUB_ADMIN_PASSWORD": "pw-for-tests",
        "AIHUB_ARTIFACT_STORE": f"s3://{bucket}/aihub",
        "AIHUB_S3_ENDPOINT_URL": s3_server.endpoint,
    }
    result = subprocess.run(
        [sys.executable, "-m", "aihub.cli", "run", "examples/pass-params-demo.yaml", "-p", "greeting=hi"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    step2 = [line.split(" | ", 1)[1] for line in result.stdout.splitlines() if line.startswith("step2 | ")]
    assert step2 == SEED_LINES
    assert not (tmp_path / "data" / "artifacts").exists()

    settings = Settings(
        data_dir=tmp_path / "elsewhere",
        artifact_store=f"s3://{bucket}/aihub",
        s3_endpoint_url=s3_server.endpoint,
    )
    artifacts, _ = build_storage(settings)
    keys = sorted(meta["path"] for batch in obstore.list(artifacts.client) for meta in batch)  # type: ignore[attr-defined]
    stored = [k for k in keys if k.startswith("artifacts/")]
    assert len(stored) == 2, keys  # step1's two path outputs (outparam2 and outparam3)
    assert "logs/1/step1/1.log" in keys and "logs/1/step2/1.log" in keys
