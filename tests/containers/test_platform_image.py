"""The platform's own image (issue 20, point 4): ``make image`` builds the Containerfile with podman, and a
container of it runs ``aihub serve`` as a non-root user; the seed's example submitted to it through GraphQL (the
CLI in client mode) prints the seed's five lines.

Users build FROM a pinned public Python image; here nothing is downloaded but Python packages: the base is
Debian bookworm made by ``debootstrap --variant=minbase`` with python3, carrying this host's CA bundle (PyPI is
reached through a TLS-intercepting proxy here), imported with ``podman import`` and cached as a tarball under
``~/.cache/aihub-tests``. The image's dependency layer is cached by podman between runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.containers.support import Engine, cache_dir, free_port

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "pass-params-demo.yaml"
SEED_LINES = ["outparam1", "/tmp/outparam2.txt", "/tmp/outparam3", "outparam2", "file1"]
BASE_IMAGE = "localhost/aihub-test-python:bookworm-1"
IMAGE = "localhost/aihub-workflow:test"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = "python3,python3-venv,ca-certificates"

pytestmark = pytest.mark.timeout(900)


def _python_base(engine: Engine) -> str:
    """The offline base image (debootstrap + python3), imported once from a cached tarball."""
    if engine.run("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    tarball = cache_dir() / f"{BASE_IMAGE.rsplit(':', 1)[1]}-rootfs.tar"
    if not tarball.exists():
        debootstrap = shutil.which("debootstrap")
        if debootstrap is None or os.geteuid() != 0:
            pytest.skip(
                "the platform image test needs debootstrap, run as root (scripts/ensure-test-deps.sh)"
            )
        with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
            root = Path(tmp) / "root"
            subprocess.run(
                [
                    debootstrap,
                    "--variant=minbase",
                    f"--include={BASE_PACKAGES}",
                    "bookworm",
                    str(root),
                    DEBIAN_MIRROR,
                ],
                check=True,
                capture_output=True,
                timeout=600,
            )
            shutil.copyfile("/etc/ssl/certs/ca-certificates.crt", root / "etc/ssl/certs/ca-certificates.crt")
            partial = tarball.with_suffix(".partial")
            subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True, timeout=300)
            partial.replace(tarball)
    engine.run(
        "import", "--change", "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt", str(tarball), BASE_IMAGE,
        timeout=300,
    )  # fmt: skip
    return BASE_IMAGE


@pytest.fixture(scope="module")
def platform_image(container_engine: Engine) -> str:
    base = _python_base(container_engine)
    build_args = f"--network host --build-arg BASE_IMAGE={base}"
    result = subprocess.run(
        [
            "make",
            "image",
            f"IMAGE={IMAGE}",
            f"IMAGE_BUILD_ARGS={build_args}",
            f"CONTAINER_ENGINE={container_engine.cli}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return IMAGE


@pytest.fixture(scope="module")
def server(container_engine: Engine, platform_image: str) -> Iterator[tuple[str, str]]:
    """A container of the image running `aihub serve` (default command); (its URL, its container name)."""
    port = free_port()
    name = f"aihub-image-test-{port}"
    container_engine.run(
        "run", "-d", "--name", name, "--network", "host", "-e", f"AIHUB_PORT={port}", platform_image
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(container_engine, name, url)
        yield url, name
    finally:
        container_engine.run("rm", "-f", "-t", "2", name, check=False)


def _wait_until_ready(engine: Engine, name: str, url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if (
            engine.run("inspect", "--format", "{{.State.Running}}", name, check=False).stdout.strip()
            != "true"
        ):
            break
        time.sleep(0.2)
    logs = engine.run("logs", name, check=False)
    pytest.fail(f"the platform container did not become ready:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")


def _admin_password(engine: Engine, name: str) -> str:
    logs = engine.run("logs", name).stdout + engine.run("logs", name).stderr
    passwords = [line.split("password: ", 1)[1].strip() for line in logs.splitlines() if "password: " in line]
    assert passwords, logs
    return passwords[-1]


def _cli(*args: str, home: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIHUB_")} | {"HOME": str(home)}
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "aihub"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=home,
    )


def test_the_image_serves_as_a_non_root_user(container_engine: Engine, server: tuple[str, str]) -> None:
    url, name = server
    config = container_engine.run(
        "image", "inspect", "--format", "{{.Config.User}} {{.Config.Entrypoint}}", IMAGE
    )
    assert config.stdout.split() == ["10001:10001", "[aihub]"]
    uid = container_engine.run("exec", name, "id", "-u").stdout.strip()
    assert uid == "10001"
    # the compiled catalogues and the vendored static files are inside: the Chinese UI and htmx are served
    login = httpx.get(f"{url}/login", headers={"Accept-Language": "zh-CN"}, timeout=10)
    assert login.status_code == 200 and "登录" in login.text
    assert httpx.get(f"{url}/static/htmx-2.0.11.min.js", timeout=10).status_code == 200


def test_the_seed_example_runs_in_the_image(
    container_engine: Engine, server: tuple[str, str], tmp_path: Path
) -> None:
    url, name = server
    password = _admin_password(container_engine, name)
    login = _cli(
        "login", "--url", url, "--username", "admin", "--password-stdin", home=tmp_path, stdin=password
    )
    assert login.returncode == 0, login.stdout + login.stderr
    run = _cli("run", str(SEED), "--watch", home=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[0] == f"server: {url} (aihub logout goes back to embedded runs)"
    step2 = [line.split(" | ", 1)[1] for line in run.stdout.splitlines() if line.startswith("step2 | ")]
    assert step2 == SEED_LINES


def test_the_image_runs_migrations_as_a_one_off_command(
    container_engine: Engine, platform_image: str
) -> None:
    """What the migration Job of deploy/kubernetes runs: `aihub migrate` on a fresh data dir, then exit 0."""
    result = container_engine.run("run", "--rm", platform_image, "migrate", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
