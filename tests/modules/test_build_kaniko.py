"""The Kubernetes build backend's Job manifest (Kaniko), built now and run against the emulator later."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kubernetes_asyncio import client

from aihub.engine.builds.kubernetes import KanikoOptions, image_name, kaniko_job
from tests.modules.conftest import MakeRepo

SHA = "0123456789abcdef0123456789abcdef01234567"


def job(**options: object) -> dict:
    return kaniko_job(
        build_id=42,
        module="hash-file",
        image=image_name("registry.local:5000/", "data-processing", "hash-file", SHA),
        git_url="https://git.example.com/group/modules.git",
        ref="main",
        commit_sha=SHA,
        dockerfile_path="modules/hash_file/Dockerfile",
        build_context="modules/hash_file",
        options=KanikoOptions(**options),  # type: ignore[arg-type]
    )


def test_image_names() -> None:
    assert (
        image_name("reg:5000/", "data-processing", "hash-file", SHA)
        == f"reg:5000/data-processing/hash-file:{SHA}"
    )
    assert image_name("reg", "Computer Vision!", "m", "x") == "reg/computer-vision/m:x"
    assert image_name("reg", "数据", "m", "x") == "reg/modules/m:x"


def test_the_job_builds_and_pushes_the_checked_commit() -> None:
    manifest = job(namespace="builds", registry_secret="push-creds")
    assert manifest["apiVersion"] == "batch/v1" and manifest["kind"] == "Job"
    meta = manifest["metadata"]
    assert meta["name"] == "aihub-build-42" and meta["namespace"] == "builds"
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "aihub",
        "aihub/build": "42",
        "aihub/module": "hash-file",
    }
    spec = manifest["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 3600
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    (clone,) = pod["initContainers"]
    assert clone["command"][:2] == ["sh", "-c"]
    assert clone["command"][3:] == ["clone", "main", "https://git.example.com/group/modules.git", SHA]
    assert {"name": "GIT_ALLOW_PROTOCOL", "value": "https:http:ssh"} in clone["env"]
    (kaniko,) = pod["containers"]
    assert kaniko["image"].startswith("gcr.io/kaniko-project/executor:")
    assert kaniko["args"] == [
        "--context=dir:///workspace/src/modules/hash_file",
        "--dockerfile=/workspace/src/modules/hash_file/Dockerfile",
        f"--destination=registry.local:5000/data-processing/hash-file:{SHA}",
        "--digest-file=/dev/termination-log",
        f"--label=org.opencontainers.image.revision={SHA}",
    ]
    assert {"name": "docker-config", "mountPath": "/kaniko/.docker", "readOnly": True} in kaniko[
        "volumeMounts"
    ]
    secret = next(v for v in pod["volumes"] if v["name"] == "docker-config")["secret"]
    assert secret == {
        "secretName": "push-creds",
        "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
    }


def test_without_a_secret_and_at_the_repository_root() -> None:
    manifest = kaniko_job(
        build_id=1,
        module="m",
        image="reg/c/m:x",
        git_url="https://h/r.git",
        ref="v1",
        commit_sha=SHA,
        dockerfile_path="Dockerfile",
        build_context=".",
        options=KanikoOptions(insecure_registry=True),
    )
    pod = manifest["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["workspace"]
    args = pod["containers"][0]["args"]
    assert args[:2] == ["--context=dir:///workspace/src", "--dockerfile=/workspace/src/Dockerfile"]
    assert args[-1] == "--insecure"


def test_the_clone_script_treats_values_as_data(make_repo: MakeRepo, tmp_path: Path) -> None:
    """The init container's script, run for real: user values are positional parameters, never shell code,
    and a branch that moved since the platform's check fails the build."""
    repo = make_repo("hash-file")
    sha = repo.git("rev-parse", "HEAD")
    manifest = job(allow_file_git=True)
    command = manifest["spec"]["template"]["spec"]["initContainers"][0]["command"]
    script = command[2].replace("/workspace", str(tmp_path / "ws"))
    (tmp_path / "ws").mkdir()

    def run(ref: str, url: str, commit: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", "-c", script, "clone", ref, url, commit], capture_output=True, text=True, check=False
        )

    ok = run("main", repo.url, sha)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "ws" / "src" / "main.py").exists()
    evil = run("main", f"{repo.url}; touch {tmp_path}/pwned", sha)
    assert evil.returncode != 0 and not (tmp_path / "pwned").exists()
    subprocess.run(["rm", "-rf", str(tmp_path / "ws" / "src")], check=True)
    moved = run("main", repo.url, "f" * 40)
    assert moved.returncode == 1
    assert "moved from ffff" in moved.stderr and "rebuild the module" in moved.stderr


async def test_every_key_is_a_field_of_the_kubernetes_api() -> None:
    """The manifest survives a round trip through kubernetes-asyncio's V1Job model: a misspelt or misplaced
    key would be dropped (and a missing required one refused)."""
    manifest = job(registry_secret="push-creds", insecure_registry=True)
    api = client.ApiClient()
    try:
        model = api._ApiClient__deserialize(manifest, "V1Job")  # type: ignore[attr-defined]
        assert isinstance(model, client.V1Job)
        assert api.sanitize_for_serialization(model) == manifest
        broken = {**manifest, "spec": {**manifest["spec"], "backofLimit": 0}}
        assert api.sanitize_for_serialization(api._ApiClient__deserialize(broken, "V1Job")) != broken  # type: ignore[attr-defined]
    finally:
        await api.close()
