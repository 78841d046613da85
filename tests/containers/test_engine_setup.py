"""The test set-up itself: the engine runs the offline base image, builds on it, and pushes to the registry."""

from __future__ import annotations

from pathlib import Path

from tests.containers.support import Engine, Registry


def test_the_base_image_runs_busybox(container_engine: Engine, busybox_image: str) -> None:
    result = container_engine.run(
        "run", "--rm", "--network", "host", busybox_image, "sh", "-c", "echo hi $((6 * 7))"
    )
    assert result.stdout == "hi 42\n"


def test_a_build_on_the_base_image_is_pushed_to_the_registry(
    container_engine: Engine, busybox_image: str, registry: Registry, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(
        f"FROM {busybox_image}\nRUN echo built-by-run > /etc/marker\nCOPY hello.txt /opt/hello.txt\n"
        'ENTRYPOINT ["cat", "/etc/marker", "/opt/hello.txt"]\n'
    )
    (tmp_path / "hello.txt").write_text("copied\n")
    tag = f"{registry.address}/setup-check:1"
    container_engine.run("build", "-q", "-t", tag, str(tmp_path))
    push = ["push", tag] if container_engine.name == "docker" else ["push", "--tls-verify=false", tag]
    container_engine.run(*push)
    container_engine.run("rmi", tag)
    pull = ["pull", tag] if container_engine.name == "docker" else ["pull", "--tls-verify=false", tag]
    container_engine.run(*pull)
    assert container_engine.run("run", "--rm", tag).stdout == "built-by-run\ncopied\n"
    container_engine.run("rmi", tag)
