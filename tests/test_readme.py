"""The README is a test: every command its ``sh`` blocks show runs here, as written, in a fresh clone.

A new user's situation exactly: a ``git clone`` of HEAD into a temporary directory, no ``AIHUB_*`` variable, a
fresh ``$HOME`` (so the default data dir and the saved login are new), ``make install`` / ``make run`` setting
up the clone's own ``.venv`` from ``pyproject.toml``. The commands are read from README.md, so this fails when
the README and the product drift apart — a README command that is neither run here nor knowingly skipped
fails it too. The only edits made to a command before it runs:

- ``RUN`` becomes the id of a run (the one ``aihub run --watch`` made; a long-running one for ``stop`` and
  ``retry``), as the README says it stands for one;
- the documented port override (``AIHUB_PORT=8080 make run``) and the ``--url`` of ``aihub login`` get a free
  port instead, so the test never collides with a server on 8000 (plain ``make run`` is the same target);
- ``make test`` is not run (it is what runs this).

Besides the README's commands, every workflow in ``examples/`` is validated and run the same way, and a run is
created in a real Chromium on the server ``make run`` started, following "The first five minutes in the
browser".
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CHROMIUM = "/usr/bin/chromium"
DEADLINE = 180.0
# `aihub run` (embedded) made the user first here, so the server tells the password it keeps until it changes
PASSWORD_LINE = re.compile(
    r"(created user 'admin' with password|user 'admin' still has its first password): "
)  # seconds for one command; set-up may install packages

pytestmark = pytest.mark.timeout(900)


def fenced_blocks(markdown: str) -> list[tuple[str, list[str]]]:
    """Every fenced code block of ``markdown`` as (info string, lines), in order."""
    blocks: list[tuple[str, list[str]]] = []
    info: str | None = None
    for line in markdown.splitlines():
        if line.startswith("```"):
            if info is None:
                info, body = line[3:].strip(), []
            else:
                blocks.append((info, body))
                info = None
        elif info is not None:
            body.append(line)
    return blocks


def sh_blocks(markdown: str) -> list[list[str]]:
    """The command lines of every ```sh block (comment-only and empty lines dropped), block by block."""
    return [
        [line.strip() for line in body if line.strip() and not line.strip().startswith("#")]
        for info, body in fenced_blocks(markdown)
        if info == "sh"
    ]


def shown_output(markdown: str, marker: str) -> list[str]:
    """The lines of the plain ``` block that shows output lines starting with ``marker``."""
    for info, body in fenced_blocks(markdown):
        if not info and body and all(line.startswith(marker) for line in body):
            return body
    raise AssertionError(f"README.md shows no output block of {marker!r} lines")


def words(command: str) -> list[str]:
    return shlex.split(command, comments=True)


def aihub_command(command: str) -> str | None:
    """``validate``, ``run``… for a ``.venv/bin/aihub`` command line; None for anything else."""
    argv = words(command)
    return argv[1] if argv and argv[0] == ".venv/bin/aihub" and len(argv) > 1 else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Clone:
    path: Path
    env: dict[str, str]
    ran: list[str] = field(default_factory=list)

    def sh(
        self, command: str, *, stdin: str | None = None, ok: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run one README line with bash in the clone; with ``ok``, it must exit 0."""
        self.ran.append(command)
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=self.path,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            start_new_session=True,  # no controlling terminal: getpass reads the password from stdin
        )
        if ok:
            assert result.returncode == 0, f"$ {command}\n{result.stdout}\n{result.stderr}"
        return result


def _user_env(home: Path) -> dict[str, str]:
    # nothing of ours: no AIHUB_* setting, no venv, and nothing of the `make test` this may run under (its
    # MAKEFLAGS/MAKELEVEL would make the README's `make` print "Entering directory" lines a user never sees)
    ours = ("AIHUB_", "XDG_", "VIRTUAL_ENV", "MAKE", "MFLAGS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    # pip's download cache stays the developer's/CI's own (the new HOME would start it empty); PATH without the
    # suite's venv, so the clone's commands use nothing but what the clone installs
    cache = subprocess.run(["pip", "cache", "dir"], capture_output=True, text=True).stdout.strip()
    env |= {"HOME": str(home), "PIP_CACHE_DIR": cache or str(Path.home() / ".cache" / "pip")}
    venv_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="module")
def clone() -> Iterator[Clone]:
    with tempfile.TemporaryDirectory(prefix="aihub-readme-", dir="/var/tmp") as tmp:
        path = Path(tmp) / "aihub"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(path)], check=True, timeout=120)
        (Path(tmp) / "home").mkdir()
        yield Clone(path, _user_env(Path(tmp) / "home"))


def test_readme_has_the_commands_this_test_runs() -> None:
    lines = [line for block in sh_blocks(README) for line in block]
    assert any(words(line)[:2] == ["make", "run"] for line in lines)
    assert any(words(line)[:2] == ["make", "test"] for line in lines)
    assert any(re.match(r"AIHUB_PORT=\d+ make run$", " ".join(words(line))) for line in lines)
    for sub in ("validate", "run", "login", "runs", "logs", "copy", "stop", "retry"):
        assert any(aihub_command(line) == sub for line in lines), sub
    for line in lines:  # nothing the test would not know how to run
        argv = words(line)
        assert argv[:1] == ["make"] or argv[:2] == ["AIHUB_PORT=8080", "make"] or aihub_command(line), line


README_ZH = (ROOT / "README.zh-CN.md").read_text()


def _local_links(markdown: str) -> list[str]:
    """The targets of the markdown's links and images that are files of this repository (no URL, no anchor)."""
    return [
        target.partition("#")[0]
        for target in re.findall(r"\]\(([^)\s]+)\)", markdown)
        if "://" not in target and not target.startswith("#")
    ]


def test_the_chinese_readme_shows_only_what_this_test_runs() -> None:
    """README.zh-CN.md, for our Chinese-speaking users, is a summary of README.md: every command it shows is one
    README.md shows, word for word but for the comment (so it runs here, as written), its spec and the seed's output are README.md's to the letter,
    each README links to the other, and every file either links to exists. Seen failing with a command that
    README.md does not show, and with a link to a file that is not there."""
    english = {tuple(words(line)) for block in sh_blocks(README) for line in block}
    chinese = [line for block in sh_blocks(README_ZH) for line in block]
    assert chinese, "README.zh-CN.md shows no command"
    assert [line for line in chinese if tuple(words(line)) not in english] == []  # (its comments are Chinese)
    for command in ("make run", "make test", "make install"):
        assert any(" ".join(words(line)[:2]) == command for line in chinese), command
    assert shown_output(README_ZH, "step2 | ") == shown_output(README, "step2 | ")
    yaml_blocks = [
        [body for info, body in fenced_blocks(text) if info == "yaml"] for text in (README, README_ZH)
    ]
    assert yaml_blocks[1] and yaml_blocks[1] == yaml_blocks[0]
    assert "README.zh-CN.md" in _local_links(README) and "README.md" in _local_links(README_ZH)
    for target in _local_links(README) + _local_links(README_ZH):
        assert (ROOT / target).exists(), target


def embedded_commands() -> list[str]:
    """The README's commands before the first ``aihub login`` (the embedded ones), without ``make run/test``."""
    lines = [line for block in sh_blocks(README) for line in block]
    before_login = lines[: next(i for i, line in enumerate(lines) if aihub_command(line) == "login")]
    return [line for line in before_login if "make" not in words(line) or words(line) == ["make", "install"]]


def server_commands() -> list[str]:
    lines = [line for block in sh_blocks(README) for line in block]
    return lines[next(i for i, line in enumerate(lines) if aihub_command(line) == "login") :]


def step2_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("step2 | ")]


def test_embedded_commands_as_written(clone: Clone) -> None:
    seed = shown_output(README, "step2 | ")
    assert len(seed) == 5
    commands = embedded_commands()
    assert words(commands[0]) == ["make", "install"], "the README sets up before it runs anything"
    install = clone.sh(commands[0])
    assert [line for line in install.stdout.splitlines() if line] == [
        line for line in install.stdout.splitlines() if line.startswith("==> ")
    ], f"set-up is one line per step:\n{install.stdout}"
    for command in commands[1:]:
        result = clone.sh(command)
        if aihub_command(command) == "run":
            first = result.stdout.splitlines()[0]
            assert first.startswith(f"data dir: {clone.env['HOME']}/.local/share/aihub "), first
            assert "SUCCEEDED" in result.stdout
            if "pass-params-demo" in command:
                assert step2_lines(result.stdout) == seed
    for example in sorted((clone.path / "examples").glob("*.yaml")):  # every example, not only those shown
        relative = example.relative_to(clone.path)
        clone.sh(f".venv/bin/aihub validate {relative}")
        if not any(str(relative) in command and aihub_command(command) == "run" for command in commands):
            clone.sh(f".venv/bin/aihub run {relative}")


NOBODY = 65534  # uid and gid
#: pip's cache for the unprivileged user's set-up, kept between runs of the suite (theirs: root's is unreadable)
NOBODY_PIP_CACHE = Path("/var/tmp/aihub-test-pip-cache-nobody")


def test_the_readme_as_a_user_who_is_not_root() -> None:
    """Most users run `aihub` as themselves, not as root; this suite runs as root here. A clone that is an
    unprivileged user's own, set up by them (`make install`, with the system's `python3`: root's is out of their
    reach) and the README's first run, as written, with a home of their own: the data dir is made under that
    home and is theirs, the run succeeds with the seed's parameter passing, and it warns that its nodes run as
    that user."""
    if os.geteuid() != 0:
        pytest.skip("the suite itself runs as a user who is not root: the other tests here are this one")
    NOBODY_PIP_CACHE.mkdir(exist_ok=True)
    os.chown(NOBODY_PIP_CACHE, NOBODY, NOBODY)
    with tempfile.TemporaryDirectory(prefix="aihub-nobody-", dir="/var/tmp") as tmp:
        base = Path(tmp)
        base.chmod(0o755)
        path, home = base / "aihub", base / "home"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(path)], check=True, timeout=120)
        home.mkdir()
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(path), str(home)], check=True)
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "PIP_CACHE_DIR": str(NOBODY_PIP_CACHE),
        }
        nobody = Clone(path, env)
        as_nobody = shlex.join(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "bash", "-c"]
        )
        command = next(
            c for c in embedded_commands() if aihub_command(c) == "run" and "pass-params-demo" in c
        )
        nobody.sh(f"{as_nobody} {shlex.quote('make install')}")
        result = nobody.sh(f"{as_nobody} {shlex.quote(command)}")
        run = result.stdout
        first = run.splitlines()[0]
        assert first.startswith(f"data dir: {home}/.local/share/aihub "), first
        warning = "SECURITY: local executor: nodes run as the server's user (the server is not root)"
        assert warning in result.stderr, result.stderr
        assert step2_lines(run) == shown_output(README, "step2 | ")
        assert "run 1: SUCCEEDED" in run
        assert (home / ".local/share/aihub").stat().st_uid == NOBODY


@dataclass
class Server:
    process: subprocess.Popen[str]
    reader: threading.Thread
    url: str
    password: str
    output: list[str]

    def stop(self) -> None:
        """SIGTERM to make and the server (their own session), SIGKILL after a minute; pipes closed."""
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.reader.join(10)
        assert self.process.stdout is not None
        self.process.stdout.close()


def _start_make_run(clone: Clone, port: int) -> Server:
    line = next(
        line for block in sh_blocks(README) for line in block if re.match(r"AIHUB_PORT=\d+ make run", line)
    )
    command = re.sub(r"AIHUB_PORT=\d+", f"AIHUB_PORT={port}", line)
    clone.ran.append(command)
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=clone.path,
        env=clone.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    password = threading.Event()
    assert process.stdout is not None

    def read() -> None:
        for raw in process.stdout:  # type: ignore[union-attr]
            output.append(raw.rstrip("\n"))
            if PASSWORD_LINE.match(raw):
                password.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    server = Server(process, reader, f"http://127.0.0.1:{port}", "", output)
    if not password.wait(DEADLINE):
        server.stop()
        raise AssertionError("make run printed no admin password:\n" + "\n".join(output))
    server.password = output[-1].rsplit(": ", 1)[1]
    return server


@pytest.fixture(scope="module")
def server(clone: Clone) -> Iterator[Server]:
    clone.sh("make install")  # the embedded test may have been deselected
    port = free_port()
    srv = _start_make_run(clone, port)
    try:
        yield srv
    finally:
        srv.stop()


def test_make_run_prints_the_url_and_password_last_and_answers_on_the_chosen_port(server: Server) -> None:
    import httpx

    setup, rest = [], server.output[:]
    while rest and rest[0].startswith("==> "):
        setup.append(rest.pop(0))
    assert setup and setup[-1].startswith("==> starting the server"), server.output
    assert server.output[-3] == f"AIHub Workflow is ready on {server.url}"
    assert PASSWORD_LINE.match(server.output[-1]) and server.output[-1].endswith(f": {server.password}")
    assert server.output[-2].startswith("data dir: ") and server.output[-2].endswith("/.local/share/aihub")
    assert httpx.get(server.url + "/healthz", timeout=10).json()["status"] == "ok"


def _run_id(stdout: str) -> str:
    match = re.search(r"^run (\d+) ", stdout, flags=re.M)
    assert match, stdout
    return match.group(1)


def _wait_status(clone: Clone, run_id: str, status: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        listing = clone.sh(".venv/bin/aihub runs").stdout
        if re.search(rf"^\s*{run_id}\b.*\b{status}\b", listing, flags=re.M):
            return
        time.sleep(0.2)  # polling the server's state with a deadline
    raise AssertionError(f"run {run_id} did not become {status}: {listing}")


def test_client_commands_as_written(clone: Clone, server: Server) -> None:
    seed = shown_output(README, "step2 | ")
    commands = server_commands()
    login = re.sub(r"--url \S+", f"--url {server.url}", commands[0])
    clone.sh(login, stdin=server.password + "\n")
    slow = clone.path.parent / "slow.yaml"
    slow.write_text("name: slow\nnodes:\n  - name: wait\n    command: sleep 600\n")
    watched = slow_run = None
    for command in commands[1:]:
        sub = aihub_command(command)
        if sub == "stop" and slow_run is None:
            slow_run = _run_id(clone.sh(f".venv/bin/aihub run {slow}").stdout)
            _wait_status(clone, slow_run, "RUNNING")
        target = slow_run if sub in ("stop", "retry") else watched
        result = clone.sh(re.sub(r"\bRUN\b", str(target), command) if "RUN" in command else command)
        if sub == "run":
            assert result.stdout.splitlines()[0].startswith(f"server: {server.url}")
            assert step2_lines(result.stdout) == seed and "SUCCEEDED" in result.stdout
            watched = _run_id(result.stdout)
        elif sub == "runs":
            assert re.search(rf"^\s*{watched}\b.*SUCCEEDED", result.stdout, flags=re.M), result.stdout
        elif sub == "logs":
            assert result.stdout.splitlines() == [line.removeprefix("step2 | ") for line in seed]
        elif sub == "copy":
            copied = _run_id(result.stdout)
            assert copied != watched
            _wait_status(clone, copied, "SUCCEEDED")
        elif sub == "stop":
            _wait_status(clone, str(slow_run), "STOPPED")
        elif sub == "retry":
            _wait_status(clone, str(slow_run), "RUNNING")
    assert slow_run is not None, "the README shows no `aihub stop RUN`"
    clone.sh(f".venv/bin/aihub stop {slow_run}")  # leave nothing running
    _wait_status(clone, slow_run, "STOPPED")


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by make test")
def test_first_five_minutes_in_the_browser(server: Server) -> None:
    """The README's browser steps on the server of `make run`: log in, start from the example, run, watch."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(base_url=server.url, locale="en-US")
            page.set_default_timeout(30_000)
            page.goto("/")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(server.password)
            page.get_by_role("button", name="Log in").click()
            page.get_by_role("link", name="Workflows").click()
            page.get_by_role("link", name="Create workflow").click()
            page.locator("#start").select_option("example:pass-params-demo")
            page.locator("#use-start").click()
            page.get_by_role("button", name="Save").click()
            expect(page.locator("#node-step1")).to_be_visible()
            expect(page.locator("#node-step2")).to_be_visible()
            page.locator("#run-version").click()
            page.locator("#run-name").fill("first-five-minutes")
            page.locator("#create-run").click()
            expect(page.locator("#node-step2")).to_have_attribute("data-status", "SUCCEEDED", timeout=90_000)
            page.locator("#node-step2 rect").click()
            page.locator("#tab-logs").click()
            expect(page.locator("#log-lines .l")).to_have_text(
                [line.removeprefix("step2 | ") for line in shown_output(README, "step2 | ")]
            )
        finally:
            browser.close()
