"""The pod manifest of an attempt (pure: no cluster)."""

from __future__ import annotations

import re

import pytest

from aihub.engine.executors.base import ArtifactInput, Job, JobKey, OutputDecl, Resources, StorageMount
from aihub.engine.executors.k8s_pod import (
    WRAPPER,
    LaunchError,
    PodOptions,
    build_pod,
    key_selector,
    label_value,
    pod_name,
)

OPTIONS = PodOptions(namespace="ns", helper_image="busybox:1.36.1-musl", default_image="python:3.11-slim")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
DIGEST = "ab" * 32


def make_job(**changes: object) -> Job:
    fields: dict[str, object] = {
        "key": JobKey(7, "train", 2),
        "argv": ["sh", "-c", 'echo "$greeting" > /tmp/out.txt'],
        "env": {"greeting": "$(rm -rf /) 'quoted'", "AI_HUB_TOKEN": "tok", "PATH": "/usr/bin:/bin"},
        "image": "pytorch/pytorch:2.4.0",
    }
    fields.update(changes)
    return Job(**fields)  # type: ignore[arg-type]


def main_container(pod: dict) -> dict:
    (main,) = pod["spec"]["containers"]
    assert main["name"] == "main"
    return main


def env_of(pod: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in main_container(pod)["env"]}


def test_pod_fields_resources_gpu_selector_volumes_labels_env() -> None:
    job = make_job(
        resources=Resources(
            cpu_millis=8000, memory_mib=65536, gpu=2, gpu_type="rtx2080", node_selector={"pool": "rtx2080x8"}
        ),
        storages=[
            StorageMount(
                "hw-data", "/data/hw", volume={"persistentVolumeClaim": {"claimName": "hw"}}, read_only=True
            ),
            StorageMount("scratch", "/scratch", volume={"nfs": {"server": "nfs.local", "path": "/export"}}),
        ],
        labels={"aihub/run": "7", "aihub/cluster": "rtx2080x8", "not a key!": "x", "team": "_vision_"},
        outputs=[OutputDecl("out", "/tmp/out.txt", "text")],
        workdir="/workspace",
    )
    pod = build_pod(job, OPTIONS, mark="::m::", input_kinds={})
    spec = pod["spec"]
    main = main_container(pod)

    assert pod["metadata"]["name"] == "aihub-r7-train-a2"
    assert pod["metadata"]["namespace"] == "ns"
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    amounts = {"cpu": "8000m", "memory": "65536Mi", "nvidia.com/gpu": "2"}
    assert main["resources"] == {"requests": amounts, "limits": amounts}
    assert spec["nodeSelector"] == {"pool": "rtx2080x8"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert pod["metadata"]["annotations"]["aihub/gpu-type"] == "rtx2080"
    # the init container never holds the GPUs, and its cpu/memory equal the main container's
    (init,) = spec["initContainers"]
    assert init["image"] == "busybox:1.36.1-musl"
    assert init["resources"]["limits"] == {"cpu": "8000m", "memory": "65536Mi"}

    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    assert volumes[mounts["/tmp/workflow_space"]["name"]] == {"name": "aihub-workflow-space", "emptyDir": {}}
    assert volumes[mounts["/.aihub"]["name"]]["emptyDir"] == {}
    hw = mounts["/data/hw"]
    assert hw["readOnly"] is True
    assert volumes[hw["name"]]["persistentVolumeClaim"] == {"claimName": "hw"}
    scratch = mounts["/scratch"]
    assert scratch["readOnly"] is False
    assert volumes[scratch["name"]]["nfs"] == {"server": "nfs.local", "path": "/export"}

    labels = pod["metadata"]["labels"]
    assert labels["aihub/run"] == "7"
    assert labels["aihub/node"] == "train"
    assert labels["aihub/attempt"] == "2"
    assert labels["aihub/cluster"] == "rtx2080x8"
    assert "not a key!" not in labels
    assert LABEL_VALUE.fullmatch(labels["team"]) and labels["team"].startswith("vision")

    # the command is the node's argv, item for item, after the fixed wrapper
    assert main["command"] == ["/.aihub/bin/busybox", "sh", "-c", WRAPPER, "aihub", *job.argv]
    assert main["image"] == "pytorch/pytorch:2.4.0"
    assert main["workingDir"] == "/workspace"
    env = env_of(pod)
    for name, value in job.env.items():
        assert env[name] == value
    assert env["_AIHUB_OUT_0_PATH"] == "/tmp/out.txt"
    assert env["_AIHUB_OUT_0_TYPE"] == "text"
    assert env["_AIHUB_MARK"] == "::m::"


def test_defaults_without_gpu_selector_or_image() -> None:
    pod = build_pod(make_job(image=""), OPTIONS, mark="::m::", input_kinds={})
    main = main_container(pod)
    assert main["image"] == "python:3.11-slim"
    assert main["resources"]["limits"] == {"cpu": "1000m", "memory": "1024Mi"}
    assert "nodeSelector" not in pod["spec"]
    assert "tolerations" not in pod["spec"]
    assert "workingDir" not in main


def test_inputs_reach_the_wrapper_with_their_kind_and_normalised_path() -> None:
    job = make_job(
        artifacts_in=[
            ArtifactInput("model", "/tmp/models//best/", DIGEST),
            ArtifactInput("cfg", "/etc/x.cfg", DIGEST),
        ]
    )
    env = env_of(build_pod(job, OPTIONS, mark="::m::", input_kinds={"model": "dir", "cfg": "file"}))
    assert env["_AIHUB_IN_COUNT"] == "2"
    assert (env["_AIHUB_IN_0_NAME"], env["_AIHUB_IN_0_PATH"], env["_AIHUB_IN_0_KIND"]) == (
        "model",
        "/tmp/models/best",
        "dir",
    )
    assert (env["_AIHUB_IN_1_DIGEST"], env["_AIHUB_IN_1_KIND"]) == (DIGEST, "file")


@pytest.mark.parametrize("node", ["step1", "Train_Model", "train_model", "x" * 62, "_private", "a_"])
def test_pod_names_are_dns_labels(node: str) -> None:
    name = pod_name(JobKey(123456, node, 10))
    assert len(name) <= 63
    assert DNS_LABEL.fullmatch(name), name


def test_pod_names_of_look_alike_nodes_differ() -> None:
    names = {pod_name(JobKey(1, n, 1)) for n in ("train", "Train", "TRAIN", "tr_ain", "tr_ain_")}
    assert len(names) == 5
    assert pod_name(JobKey(1, "train", 1)) == "aihub-r1-train-a1"


@pytest.mark.parametrize("value", ["_private", "x" * 80, "a b", "ok-value_1.2"])
def test_label_values_are_valid(value: str) -> None:
    cleaned = label_value(value)
    assert len(cleaned) <= 63 and LABEL_VALUE.fullmatch(cleaned), cleaned
    if value == "ok-value_1.2":
        assert cleaned == value


def test_key_selector_uses_the_sanitised_node_label() -> None:
    assert key_selector(JobKey(3, "_x", 1)) == f"aihub/run=3,aihub/node={label_value('_x')},aihub/attempt=1"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"env": {"_AIHUB_BB": "/bin/evil"}}, "reserved"),
        ({"env": {"_aihub_x": "1"}}, "reserved"),
        ({"storages": [StorageMount("hw", "/data")]}, "storage 'hw' has no Kubernetes volume"),
        (
            {"outputs": [OutputDecl("o", "relative.txt", "text")]},
            "output 'o': 'relative.txt' is not an absolute",
        ),
        ({"outputs": [OutputDecl("o", "/", "path")]}, "root directory"),
        ({"outputs": [OutputDecl("o", "/tmp/a\nb", "path")]}, "control characters"),
        ({"argv": []}, "nothing to run"),
    ],
)
def test_jobs_that_cannot_become_pods(changes: dict, message: str) -> None:
    with pytest.raises(LaunchError, match=message):
        build_pod(make_job(**changes), OPTIONS, mark="::m::", input_kinds={})
