"""A real container engine for tests: podman (or docker), a busybox base image made offline, a local registry.

Nothing here downloads anything: the base image is ``podman import`` of a tarball holding Debian's static busybox
(``/bin/busybox`` and its applet links), cached under ``~/.cache/aihub-tests`` (``AIHUB_TEST_CACHE``) and imported
once per engine; the registry is Debian's ``docker-registry`` on ``127.0.0.1:PORT`` with its storage in a temporary
directory. scripts/ensure-test-deps.sh installs podman, buildah, runc and docker-registry (as root, when missing)
and writes /etc/containers/containers.conf where the host has none.

Other test packages use it too (``from tests.containers.support import ...``): every function is synchronous
and safe to call from a session-scoped fixture.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: the base image every container test uses (a static busybox: sh, echo, cat, head, ...)
BUSYBOX_IMAGE = "localhost/aihub-test-busybox:2"
#: bump when the tarball's content changes, so cached copies are rebuilt
_ROOTFS_VERSION = "2"
#: a file that exists only in the image (tests check that nodes see the image, not the host)
IMAGE_ONLY_FILE = ("/etc/aihub-test-image", "only in the image\n")


def cache_dir() -> Path:
    base = os.environ.get("AIHUB_TEST_CACHE") or str(Path.home() / ".cache" / "aihub-tests")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Engine:
    """A container engine CLI that works on this host."""

    name: str  # "podman" | "docker"
    cli: str  # absolute path

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.cli, *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )


def find_engine() -> tuple[Engine | None, str]:
    """The first engine that really runs a container here, or None and why not (a skip reason)."""
    reasons = []
    for name in ("podman", "docker"):
        cli = shutil.which(name)
        if cli is None:
            reasons.append(f"{name} is not installed")
            continue
        engine = Engine(name, cli)
        try:
            info = engine.run("info", timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            reasons.append(f"{name} info failed: {exc}")
            continue
        if info.returncode != 0:
            reasons.append(f"{name} info failed: {(info.stderr or info.stdout).strip()[-300:]}")
            continue
        return engine, ""
    return None, "no working container engine (" + "; ".join(
        reasons
    ) + "); scripts/ensure-test-deps.sh installs podman"


def busybox_rootfs() -> Path:
    """The cached tarball of the base image's root filesystem (built from the host's static busybox)."""
    target = cache_dir() / f"busybox-rootfs-{_ROOTFS_VERSION}.tar"
    if target.exists():
        return target
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RuntimeError("busybox is not installed (scripts/ensure-test-deps.sh installs busybox-static)")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for sub in ("bin", "etc", "tmp", "root"):
            (root / sub).mkdir()
        (root / "tmp").chmod(0o1777)
        shutil.copy2(busybox, root / "bin" / "busybox")
        for applet in applets:
            if applet != "busybox" and "/" not in applet:
                (root / "bin" / applet).symlink_to("busybox")
        (root / "etc" / "passwd").write_text(
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        )
        (root / IMAGE_ONLY_FILE[0].lstrip("/")).write_text(IMAGE_ONLY_FILE[1])
        (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
        partial = target.with_name(f".{target.name}.{os.getpid()}")
        with tarfile.open(partial, "w") as tar:
            tar.add(root, arcname=".")
        os.replace(partial, target)
    return target


def ensure_busybox_image(engine: Engine, tag: str = BUSYBOX_IMAGE) -> str:
    """``tag`` in the engine's image store (imported from the cached tarball when missing); returns ``tag``."""
    if engine.run("image", "inspect", tag, check=False).returncode == 0:
        return tag
    engine.run("import", "--change", "ENV PATH=/bin", "--change", 'CMD ["sh"]', str(busybox_rootfs()), tag)
    return tag


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Registry:
    address: str  # "127.0.0.1:PORT": plain HTTP


@contextlib.contextmanager
def local_registry() -> Iterator[Registry]:
    """Debian's ``docker-registry serve`` on a free loopback port, storage in a temporary directory."""
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RuntimeError("docker-registry is not installed (scripts/ensure-test-deps.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="aihub-registry-") as tmp:
        port = free_port()
        config = Path(tmp, "config.yml")
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {tmp}/data\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
        )
        log = open(Path(tmp, "registry.log"), "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [binary, "serve", str(config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "docker-registry did not start: " + Path(tmp, "registry.log").read_text()
                    )
                time.sleep(0.05)
            yield Registry(f"127.0.0.1:{port}")
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
