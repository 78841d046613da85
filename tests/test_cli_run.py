"""`aihub run FILE -p k=v` embedded: follows the run, prints logs, exit code tells the outcome."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _aihub(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIHUB_DATA_DIR": str(tmp_path / "data"), "AIHUB_ADMIN_PASSWORD": "pw-for-tests"}
    env.pop("AIHUB_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "aihub.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_run_seed_example_succeeds_and_shows_logs(tmp_path: Path) -> None:
    result = _aihub(tmp_path, "run", "examples/pass-params-demo.yaml", "-p", "greeting=hi")
    assert result.returncode == 0, result.stdout + result.stderr
    step2 = [line.split(" | ", 1)[1] for line in result.stdout.splitlines() if line.startswith("step2 | ")]
    assert step2 == ["outparam1", "/tmp/outparam2.txt", "/tmp/outparam3", "outparam2", "file1"]
    assert "SUCCEEDED" in result.stdout


def test_run_failure_exits_1_with_last_log_lines(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: bad\nnodes:\n  - name: boom\n    command: 'echo first; echo last-words >&2; exit 4'\n"
    )
    result = _aihub(tmp_path, "run", str(spec))
    assert result.returncode == 1
    tail = result.stdout[result.stdout.index("node boom failed") :]
    assert "exited with code 4" in tail and "last-words" in tail


def test_run_rejects_bad_params(tmp_path: Path) -> None:
    result = _aihub(tmp_path, "run", "examples/pass-params-demo.yaml", "-p", "nope=1")
    assert result.returncode == 2
    assert "nope" in result.stderr
    result = _aihub(tmp_path, "run", "examples/pass-params-demo.yaml", "-p", "novalue")
    assert result.returncode == 2 and "NAME=VALUE" in result.stderr


def test_embedded_run_strips_terminal_escapes_from_logs(tmp_path: Path) -> None:
    """A node's log cannot clear the screen or retitle the terminal of whoever runs `aihub run`."""
    spec = tmp_path / "escapes.yaml"
    spec.write_text(
        "name: escapes\nnodes:\n  - name: loud\n"
        "    command: printf 'a\\033[2Jb\\033]0;pwned\\007c\\n'; printf 'x\\033[31my\\n' >&2; exit 3\n"
    )
    result = _aihub(tmp_path, "run", str(spec))
    assert result.returncode == 1
    assert "\033" not in result.stdout and "\007" not in result.stdout
    assert "loud | abc" in result.stdout and "  xy" in result.stdout  # the live line and the failure tail
