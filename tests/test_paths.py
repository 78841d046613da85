"""No path the product stores or hands to a process depends on the current directory (issue 10).

Settings make every path absolute once, when they load; ``aihub run`` works from any directory with a relative
``AIHUB_DATA_DIR`` or none at all, and says where its data dir is on its first line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aihub.engine.executors.local import LocalExecutor
from aihub.settings import Settings, default_data_dir
from aihub.storage.local import LocalArtifactStore, LocalLogStore

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "pass-params-demo.yaml"
SEED_LINES = ["outparam1", "/tmp/outparam2.txt", "/tmp/outparam3", "outparam2", "file1"]


def test_relative_data_dir_is_made_absolute_against_the_cwd_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIHUB_DATA_DIR", "some/../data")
    settings = Settings()
    assert settings.data_dir == tmp_path / "data"
    assert settings.resolved_database_url == f"sqlite://{tmp_path / 'data' / 'aihub.sqlite3'}"
    monkeypatch.chdir("/")
    assert settings.data_dir == tmp_path / "data"  # fixed at load, not re-read from the new cwd


def test_assigned_and_home_relative_paths_are_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = Settings(data_dir=Path("a"), kubernetes_kubeconfig="~/kube/config")
    assert settings.data_dir == tmp_path / "a"
    assert settings.kubernetes_kubeconfig == str(tmp_path / "home" / "kube" / "config")
    settings.data_dir = Path("b")
    assert settings.data_dir == tmp_path / "b"


def test_relative_sqlite_url_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings(database_url="sqlite://db/x.sqlite3").database_url == f"sqlite://{tmp_path}/db/x.sqlite3"
    assert Settings(database_url="sqlite:///abs/x.sqlite3").database_url == "sqlite:///abs/x.sqlite3"
    assert Settings(database_url="sqlite://:memory:").database_url == "sqlite://:memory:"
    url = "postgres://u@127.0.0.1:5432/db"
    assert Settings(database_url=url).database_url == url


def test_default_data_dir_is_per_user_not_per_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir("/")
    assert Settings().data_dir == tmp_path / ".local" / "share" / "aihub"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "aihub"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/xdg")  # ignored, as the XDG spec says
    assert default_data_dir() == tmp_path / ".local" / "share" / "aihub"
    monkeypatch.setenv("AIHUB_DATA_DIR", "")  # an empty variable is no setting
    assert Settings().data_dir == tmp_path / ".local" / "share" / "aihub"


def test_stores_and_executor_hold_absolute_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    logs = LocalLogStore(Path("logs"))
    artifacts = LocalArtifactStore(Path("artifacts"))
    executor = LocalExecutor(Path("runs"), artifacts, logs, isolation="off")
    assert logs.path(1, "a", 1) == tmp_path / "logs" / "1" / "a" / "1.log"
    assert artifacts.root == tmp_path / "artifacts"
    assert executor.work_root == tmp_path / "runs"


@pytest.fixture(params=["/tmp", "/var/tmp"])
def elsewhere(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh working directory under /tmp or /var/tmp, outside the clone."""
    with tempfile.TemporaryDirectory(prefix="aihub-cwd-", dir=request.param) as cwd:
        yield Path(cwd)


def _aihub_run(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aihub.cli", "run", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _clean_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("AIHUB_")}
    env["PYTHONPATH"] = str(ROOT)
    return env | extra


def _seed_lines(stdout: str) -> list[str]:
    return [line.split(" | ", 1)[1] for line in stdout.splitlines() if line.startswith("step2 | ")]


def test_run_with_a_relative_data_dir_from_elsewhere(elsewhere: Path) -> None:
    result = _aihub_run(elsewhere, _clean_env(AIHUB_DATA_DIR="data"), str(DEMO), "-p", "greeting=hi")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0].startswith(f"data dir: {elsewhere / 'data'} ")
    assert _seed_lines(result.stdout) == SEED_LINES
    lines = result.stdout.splitlines()
    assert lines.index("step2 | file1") < lines.index("step2: SUCCEEDED — exited with code 0")  # log first
    assert (elsewhere / "data" / "aihub.sqlite3").is_file()


def test_run_with_no_setting_uses_the_per_user_data_dir(elsewhere: Path) -> None:
    home = elsewhere / "home"
    spec = elsewhere / "demo.yaml"
    spec.write_text(DEMO.read_text())
    env = _clean_env(HOME=str(home))
    env.pop("XDG_DATA_HOME", None)
    result = _aihub_run(elsewhere, env, "demo.yaml", "-p", "greeting=hi")  # the spec relative to the cwd
    assert result.returncode == 0, result.stdout + result.stderr
    data_dir = home / ".local" / "share" / "aihub"
    assert result.stdout.splitlines()[0].startswith(f"data dir: {data_dir} ")
    assert _seed_lines(result.stdout) == SEED_LINES
    assert (data_dir / "aihub.sqlite3").is_file()
    assert not (elsewhere / ".aihub").exists()
