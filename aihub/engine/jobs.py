"""What the executor is asked to run for one attempt of a node: the ``Job`` (argv, env, image, artifacts,
outputs, storages, resources, labels), built from the run's state. No I/O."""

from __future__ import annotations

from aihub.db.models import ModuleBuild, NodeRun
from aihub.domain.spec import NodeSpec, OutputDecl
from aihub.engine.executors.base import Job, JobKey, StorageMount
from aihub.engine.executors.base import OutputDecl as JobOutput
from aihub.engine.params import build_env, cache_key, injected_env, module_argv, resolve_inputs
from aihub.engine.state import RunState
from aihub.settings import Settings


def build_job(
    settings: Settings, state: RunState, spec: NodeSpec, node: NodeRun
) -> tuple[Job, dict[str, str]]:
    """The job of the node's next attempt and the fingerprint of its inputs (for the cache key); sets
    ``node.inputs``. Raises ``InputError`` when an input cannot be resolved."""
    outputs_of = {p: state.nodes[p].outputs for p in state.parents[spec.name]}
    inputs = resolve_inputs(spec, state.run.params, outputs_of)
    build = state.builds.get(spec.name)
    snap = build.snapshot if build else {}
    decls: list[OutputDecl] = spec.outputs or [OutputDecl(**o) for o in snap.get("outputs", [])]
    owner = state.run.owner_id  # type: ignore[attr-defined]
    injected = injected_env(
        user_id=owner, token=state.token, run_id=state.run.id, api_url=settings.resolved_api_url
    )
    env = build_env(
        module_env=snap.get("env", {}), node_env=spec.env, inputs=inputs.values, injected=injected
    )
    if build is not None:
        argv = module_argv(list(build.entrypoint), inputs.values)
        image, workdir = build.image, build.workdir
    else:
        argv, image, workdir = ["sh", "-c", spec.command], spec.image, ""
    key = JobKey(state.run.id, spec.name, node.attempt + 1)
    running = state.running[spec.name]
    job = Job(
        key=key,
        argv=argv,
        env=env,
        image=image,
        workdir=workdir,
        artifacts_in=inputs.artifacts,
        outputs=[JobOutput(name=o.name, path=o.path, type=o.type) for o in decls],
        storages=_storages(state, spec, build),
        resources=running.lease,
        labels=_labels(key, running.pool.name),
        max_text_output=settings.max_text_output,
    )
    node.inputs = inputs.values
    return job, inputs.fingerprint


def _storages(state: RunState, spec: NodeSpec, build: ModuleBuild | None) -> list[StorageMount]:
    storages = [
        StorageMount(
            name=s.name,
            path=s.path,
            host_path=s.host_path,
            volume=dict(s.volume or {}),
            read_only=s.read_only,
        )
        for n in spec.storages
        if (s := state.storages.get(n)) is not None
    ]
    if build is not None and build.context_path:
        # the local build backend's copy of the module: visible to the node at its own path, read-only
        # (a node's /tmp is private, and the data dir may live under it)
        storages.append(StorageMount(name="module-build", path=build.context_path, read_only=True))
    return storages


def _labels(key: JobKey, cluster: str) -> dict[str, str]:
    return {
        "aihub/run": str(key.run_id),
        "aihub/node": key.node,
        "aihub/attempt": str(key.attempt),
        "aihub/cluster": cluster,
    }


def node_cache_key(build: ModuleBuild, spec: NodeSpec, fingerprint: dict[str, str]) -> str:
    """Recorded even when caching is off for this node/run, so later runs can reuse this result; node env is
    an input too (module env is part of the build)."""
    env_inputs = {f"env:{k}": v for k, v in spec.env.items()}
    return cache_key(build.id, {**fingerprint, **env_inputs})
