"""The Kubernetes build backend's Job: clone the module's commit, build its image with Kaniko, push it.

:func:`kaniko_job` returns the ``batch/v1`` Job manifest (a plain dict, as ``kubernetes-asyncio``'s
``BatchV1Api.create_namespaced_job`` accepts) for one module build:

- an init container clones the repository exactly like the platform's own checkout (shallow, one branch or tag,
  no submodules, allowed protocols only, no prompts) and verifies that it got the commit the platform checked,
  so the image is built from the source that passed the Dockerfile/README checks. User-given values reach
  ``git`` only as positional parameters of a fixed script (``"$1"``), never as shell text;
- Kaniko builds ``<context>`` with ``<dockerfile>`` and pushes ``<registry>/<category>/<name>:<sha>``; its
  image digest is written to the termination message, where the platform reads it;
- pushing credentials come from an optional ``kubernetes.io/dockerconfigjson`` secret mounted at
  ``/kaniko/.docker``.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any

from aihub.engine.builds.git import ALLOWED_SCHEMES

__all__ = ["KanikoOptions", "image_name", "kaniko_job"]

WORKSPACE = "/workspace"
SOURCE = f"{WORKSPACE}/src"

_CLONE_SCRIPT = (
    "set -eu\n"
    'git clone --depth 1 --no-recurse-submodules --branch "$1" -- "$2" ' + SOURCE + "\n"
    'actual="$(git -C ' + SOURCE + ' rev-parse HEAD)"\n'
    'if [ "$actual" != "$3" ]; then\n'
    '  echo "branch/tag $1 moved from $3 to $actual since the build was checked; rebuild the module" >&2\n'
    "  exit 1\n"
    "fi\n"
)


@dataclass(frozen=True)
class KanikoOptions:
    namespace: str = "aihub"
    kaniko_image: str = "gcr.io/kaniko-project/executor:v1.23.2"
    git_image: str = "alpine/git:2.45.2"
    registry_secret: str | None = None  # a kubernetes.io/dockerconfigjson secret for pushing
    insecure_registry: bool = False
    allow_file_git: bool = False
    deadline_seconds: int = 3600
    ttl_seconds: int = 86400
    cpu: str = "1"
    memory: str = "2Gi"


def _component(text: str) -> str:
    """A repository path component a registry accepts: lowercase letters, digits and single separators."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "modules"


def image_name(registry: str, category: str, module: str, sha: str) -> str:
    """``<registry>/<category>/<name>:<sha>`` with the category made a valid repository component."""
    return f"{registry.rstrip('/')}/{_component(category)}/{module}:{sha}"


def _under_source(relative: str) -> str:
    normal = posixpath.normpath("/" + relative.strip().lstrip("/"))
    return SOURCE + (normal if normal != "/" else "")


def kaniko_job(
    *,
    build_id: int,
    module: str,
    image: str,
    git_url: str,
    ref: str,
    commit_sha: str,
    dockerfile_path: str,
    build_context: str,
    options: KanikoOptions,
) -> dict[str, Any]:
    """The Job manifest that builds and pushes ``image`` for module build ``build_id``."""
    labels = {"app.kubernetes.io/managed-by": "aihub", "aihub/build": str(build_id), "aihub/module": module}
    kaniko = _kaniko_container(options, image, commit_sha, dockerfile_path, build_context)
    pod = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "initContainers": [_clone_container(options, git_url, ref, commit_sha)],
        "containers": [kaniko],
        "volumes": _volumes(options),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"aihub-build-{build_id}", "namespace": options.namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": options.deadline_seconds,
            "ttlSecondsAfterFinished": options.ttl_seconds,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def _clone_container(options: KanikoOptions, git_url: str, ref: str, commit_sha: str) -> dict[str, Any]:
    """The init container that clones the checked commit into the workspace (see the module docstring)."""
    protocols = (*ALLOWED_SCHEMES, "file") if options.allow_file_git else ALLOWED_SCHEMES
    return {
        "name": "clone",
        "image": options.git_image,
        "command": ["sh", "-c", _CLONE_SCRIPT, "clone", ref, git_url, commit_sha],
        "env": [
            {"name": "GIT_TERMINAL_PROMPT", "value": "0"},
            {"name": "GIT_ALLOW_PROTOCOL", "value": ":".join(protocols)},
        ],
        "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE}],
        "resources": _resources(options),
    }


def _kaniko_container(
    options: KanikoOptions, image: str, commit_sha: str, dockerfile_path: str, build_context: str
) -> dict[str, Any]:
    """The container that builds the image and pushes it, its digest in the termination message."""
    args = [
        f"--context=dir://{_under_source(build_context)}",
        f"--dockerfile={_under_source(dockerfile_path)}",
        f"--destination={image}",
        "--digest-file=/dev/termination-log",
        f"--label=org.opencontainers.image.revision={commit_sha}",
    ]
    if options.insecure_registry:
        args.append("--insecure")
    mounts: list[dict[str, Any]] = [{"name": "workspace", "mountPath": WORKSPACE}]
    if options.registry_secret:
        mounts.append({"name": "docker-config", "mountPath": "/kaniko/.docker", "readOnly": True})
    return {
        "name": "kaniko",
        "image": options.kaniko_image,
        "args": args,
        "volumeMounts": mounts,
        "resources": _resources(options),
        "terminationMessagePolicy": "File",
    }


def _volumes(options: KanikoOptions) -> list[dict[str, Any]]:
    """The workspace, and the push credentials when a secret holds them."""
    volumes: list[dict[str, Any]] = [{"name": "workspace", "emptyDir": {}}]
    if options.registry_secret:
        items = [{"key": ".dockerconfigjson", "path": "config.json"}]
        volumes.append(
            {"name": "docker-config", "secret": {"secretName": options.registry_secret, "items": items}}
        )
    return volumes


def _resources(options: KanikoOptions) -> dict[str, dict[str, str]]:
    return {"requests": {"cpu": options.cpu, "memory": options.memory}, "limits": {"memory": options.memory}}
