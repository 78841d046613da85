"""The ``aihub`` command as a client of a real server (uvicorn in this process; the CLI in a child process):
login, run --watch through the websocket subscription, runs, logs (-f), stop, retry (--from), copy, logout,
and every error a user can meet."""

# ruff: noqa: F811 - the API's fixtures are imported from tests/graphql and requested by name

from __future__ import annotations

import asyncio
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.graphql.conftest import _fast_password_hashing, app_options, server, shared_dir, users  # noqa: F401
from tests.graphql.harness import PASSWORD, Server, wait_for
from tests.polling import gate_wait

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "examples" / "pass-params-demo.yaml"


@dataclass
class Result:
    code: int | None
    out: str
    err: str


class Cli:
    def __init__(self, server: Server, config: Path) -> None:
        self.server, self.config = server, config

    def env(self, *, url: bool = True, token: str | None = "alice") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIHUB_")}
        env["AIHUB_CONFIG_DIR"] = str(self.config)
        env["AIHUB_DATA_DIR"] = str(self.config / "embedded-data")  # must stay unused in client mode
        if url:
            env["AIHUB_URL"] = self.server.url
        if token:
            env["AIHUB_TOKEN"] = self.server.tokens.get(token, token)
        return env

    async def start(
        self, *args: str, stdin: bytes | None = None, **env_options: object
    ) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "aihub.cli",
            *args,
            cwd=ROOT,
            env=self.env(**env_options),  # type: ignore[arg-type]
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def __call__(self, *args: str, stdin: bytes | None = None, **env_options: object) -> Result:
        proc = await self.start(*args, **env_options)
        async with asyncio.timeout(120):
            out, err = await proc.communicate(stdin)
        return Result(proc.returncode, out.decode(), err.decode())


@pytest.fixture
def cli(users: Server, tmp_path: Path) -> Cli:
    return Cli(users, tmp_path / "config")


def run_id_of(result: Result) -> str:
    """The id in the ``run N '...' of ...`` line (after ``server: URL``, which `aihub run` prints first)."""
    lines = result.out.splitlines()
    assert lines and (lines[0].startswith("run ") or lines[0].startswith("server: ")), result.out
    return next(line for line in lines if line.startswith("run ")).split()[1]


async def test_login_saves_the_token_then_commands_use_it(cli: Cli) -> None:
    result = await cli(
        "login",
        "--url",
        cli.server.url,
        "-u",
        "alice",
        "--password-stdin",
        stdin=f"{PASSWORD}\n".encode(),
        url=False,
        token=None,
    )
    assert result.code == 0, result.err
    assert "logged in" in result.out
    token_file = cli.config / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    result = await cli("runs", url=False, token=None)  # the URL and token saved by login
    assert result.code == 0, result.err
    assert result.out.split() == ["ID", "NAME", "STATUS", "WORKFLOW", "OWNER", "CREATED"]
    result = await cli("run", str(SEED), url=False, token=None)  # a saved login makes `run` a client too
    assert result.code == 0 and "of pass-params-demo v1" in result.out
    assert not (cli.config / "embedded-data").exists()
    result = await cli("logout", url=False, token=None)
    assert result.code == 0 and not token_file.exists()
    result = await cli("runs", url=False, token=None)
    assert result.code == 1 and "not logged in" in result.err


async def test_login_with_a_wrong_password(cli: Cli) -> None:
    result = await cli(
        "login",
        "--url",
        cli.server.url,
        "-u",
        "alice",
        "--password-stdin",
        stdin=b"nope\n",
        url=False,
        token=None,
    )
    assert result.code == 1 and "wrong username or password" in result.err
    assert not (cli.config / "token").exists()


async def test_run_watch_follows_status_and_logs(cli: Cli) -> None:
    result = await cli("run", str(SEED), "-p", "greeting=hi", "--watch")
    assert result.code == 0, result.out + result.err
    first, second = result.out.splitlines()[:2]
    assert first.startswith("server: http://127.0.0.1:"), first  # where it went, first
    assert second.endswith("of pass-params-demo v1: PENDING")
    step2 = [line.split(" | ", 1)[1] for line in result.out.splitlines() if line.startswith("step2 | ")]
    assert step2 == ["outparam1", "/tmp/outparam2.txt", "/tmp/outparam3", "outparam2", "file1"]
    lines = result.out.splitlines()
    assert any(line.endswith(": SUCCEEDED — all nodes succeeded") for line in lines)
    # (RUNNING too, unless it ran before the subscription started)
    assert "step1: SUCCEEDED — exited with code 0" in lines
    assert not (cli.config / "embedded-data").exists()  # it ran on the server
    # the same file again reuses the workflow; a changed file adds a version
    again = await cli("run", str(SEED))
    assert again.code == 0 and "of pass-params-demo v1" in again.out
    changed = cli.config.parent / "changed.yaml"
    changed.write_text(SEED.read_text().replace("default: hello", "default: bonjour"))
    result = await cli("run", str(changed))
    assert result.code == 0 and "of pass-params-demo v2" in result.out


async def test_run_watch_failure_exits_1_with_the_last_log_lines(cli: Cli, tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: bad\nnodes:\n  - name: boom\n    command: 'echo first; echo last-words >&2; exit 4'\n"
    )
    result = await cli("run", str(spec), "--watch")
    assert result.code == 1, result.out + result.err
    tail = result.out[result.out.index("node boom failed") :]
    assert "exited with code 4" in tail and "last-words" in tail


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["run", str(SEED), "-p", "nope=1"], 2, "nope"),
        (["run", str(SEED), "-p", "novalue"], 2, "NAME=VALUE"),
        (["run", "/does/not/exist.yaml"], 2, "No such file"),
        (["stop", "987654"], 2, "not found"),
        (["retry", "987654"], 2, "not found"),
        (["logs", "987654", "a"], 2, "not found"),
    ],
)
async def test_client_errors(cli: Cli, args: list[str], code: int, needle: str) -> None:
    result = await cli(*args)
    assert result.code == code, result.out + result.err
    assert needle in result.err


async def test_no_server_bad_token_unreachable(cli: Cli) -> None:
    result = await cli("runs", url=False)
    assert result.code == 1 and "no server configured" in result.err
    result = await cli("runs", token="aih_s_bogus")
    assert result.code == 1 and "invalid" in result.err and "aihub login" in result.err
    env_url = cli.server.url
    cli.server.url = "http://127.0.0.1:9"  # nothing listens on the discard port
    try:
        result = await cli("runs")
    finally:
        cli.server.url = env_url
    assert result.code == 1 and "cannot reach the server" in result.err


def gated(gate: Path) -> str:
    return (
        "name: gated\nparams: [{name: word, default: x}]\nnodes:\n"
        f"  - name: a\n    command: 'echo before; {gate_wait(gate)}; echo after'\n"
        "  - name: b\n    depends_on: [a]\n    inputs: [{name: w, from: params.word}]\n    command: 'echo $w'\n"
    )


async def test_runs_logs_stop_retry_copy(cli: Cli, shared_dir: Path, tmp_path: Path) -> None:
    gate = shared_dir / "gate"
    spec = tmp_path / "gated.yaml"
    spec.write_text(gated(gate))
    submitted = await cli("run", str(spec))
    assert submitted.code == 0, submitted.err
    run_id = run_id_of(submitted)
    await wait_for(cli.server, run_id, node="a", node_status="RUNNING")

    follow = await cli.start("logs", run_id, "a", "-f")
    assert follow.stdout is not None
    async with asyncio.timeout(30):
        assert await follow.stdout.readline() == b"before\n"  # live, while the node runs
    listed = await cli("runs", "--status", "running")
    assert listed.code == 0
    assert listed.out.splitlines()[1].split()[:4] == [run_id, "gated-v1", "RUNNING", "gated"]

    stopped = await cli("stop", run_id)
    assert stopped.code == 0 and stopped.out.startswith(f"run {run_id} 'gated-v1' of gated v1: STOP")
    async with asyncio.timeout(30):
        await follow.communicate()
    assert follow.returncode == 0  # the attempt ended, so did the stream
    await wait_for(cli.server, run_id)
    again = await cli("stop", run_id)
    assert again.code == 2 and "cannot be stopped" in again.err

    gate.write_text("")
    retried = await cli("retry", run_id)
    assert retried.code == 0 and retried.out.strip().endswith("PENDING")
    events = await wait_for(cli.server, run_id)
    assert events[-1]["runStatus"] == "SUCCEEDED"
    logs = await cli("logs", run_id, "a")
    assert logs.code == 0 and logs.out == "before\nafter\n"
    first_attempt = await cli("logs", run_id, "a", "--attempt", "1")
    assert first_attempt.out.startswith("before\n") and "after" not in first_attempt.out

    from_b = await cli("retry", run_id, "--from", "b")
    assert from_b.code == 0
    await wait_for(cli.server, run_id)
    bad = await cli("retry", run_id, "--from", "zzz")
    assert bad.code == 2 and "zzz" in bad.err

    copied = await cli("copy", run_id, "-p", "word=copied", "--name", "my-copy")
    assert copied.code == 0 and copied.out.startswith("run ") and "'my-copy'" in copied.out
    copy_id = run_id_of(copied)
    await wait_for(cli.server, copy_id)
    assert (await cli("logs", copy_id, "b")).out == "copied\n"
