"""Parameter passing (SPEC.md §3): inputs resolved just before a node starts, and the environment it sees.

Values reach a node only as environment variables (plain nodes) or argv items (module nodes), never as
text spliced into a command, so no value is ever parsed as shell code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aihub.domain.spec import NodeSpec
from aihub.engine.executors.base import ArtifactInput

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class ResolvedInputs:
    values: dict[str, str] = field(default_factory=dict)
    artifacts: list[ArtifactInput] = field(default_factory=list)
    #: what identifies the inputs for caching: text values and artifact digests
    fingerprint: dict[str, str] = field(default_factory=dict)


class InputError(ValueError):
    """An input that cannot be resolved (its source output is missing)."""


def resolve_inputs(
    node: NodeSpec, params: Mapping[str, str], outputs_of: Mapping[str, Mapping[str, Any]]
) -> ResolvedInputs:
    """Bind every input of ``node`` from the run params, a literal, or an ancestor's stored outputs."""
    resolved = ResolvedInputs()
    for decl in node.inputs:
        if decl.value is not None:
            value = decl.value
            resolved.fingerprint[decl.name] = f"text:{value}"
        elif decl.is_param_ref:
            value = params[decl.ref_output]
            resolved.fingerprint[decl.name] = f"text:{value}"
        else:
            out = outputs_of.get(decl.ref_node, {}).get(decl.ref_output)
            if out is None:
                raise InputError(
                    f"input {decl.name!r}: {decl.ref_node}.{decl.ref_output} was not produced by node {decl.ref_node!r}"
                )
            value = out["value"]
            if out["type"] == "path":
                resolved.artifacts.append(ArtifactInput(name=decl.name, path=value, digest=out["digest"]))
                resolved.fingerprint[decl.name] = f"path:{value}:{out['digest']}"
            else:
                resolved.fingerprint[decl.name] = f"text:{value}"
        resolved.values[decl.name] = value
    return resolved


def injected_env(*, user_id: int, token: str, run_id: int, api_url: str) -> dict[str, str]:
    return {
        "AI_HUB_USER_ID": str(user_id),
        "AI_HUB_TOKEN": token,
        "AI_HUB_WORKFLOW_RUN_ID": str(run_id),
        "AI_HUB_API_URL": api_url,
    }


def build_env(
    *,
    module_env: Mapping[str, str],
    node_env: Mapping[str, str],
    inputs: Mapping[str, str],
    injected: Mapping[str, str],
) -> dict[str, str]:
    """Layers, later wins: base, module defaults, node env, inputs, then the injected ``AI_HUB_*``."""
    env = {"PATH": BASE_PATH, "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
    env.update(module_env)
    env.update(node_env)
    env.update(inputs)
    env.update(injected)
    return env


def module_argv(entrypoint: list[str], inputs: Mapping[str, str]) -> list[str]:
    """A module's entrypoint gets its inputs as ``--name=value`` argv items (no shell involved)."""
    return [*entrypoint, *(f"--{name}={value}" for name, value in inputs.items())]


def cache_key(build_id: int, fingerprint: Mapping[str, str]) -> str:
    """Identity of a module node's work: the pinned build and its resolved inputs."""
    payload = json.dumps({"build": build_id, "inputs": dict(sorted(fingerprint.items()))}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()
