"""A whole run through the engine with ``AIHUB_EXECUTOR=kubernetes``: the real runtime (database, bus,
scheduler, run tokens), the executor built from settings with a kubeconfig pointing at the emulator,
the simulated kubelet running the pods, and the platform's artifact routes checking the real run tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aihub.db.models import Attempt, NodeRun, User
from aihub.domain.status import NodeStatus, RunStatus
from aihub.engine.executors.kubernetes import KubernetesExecutor
from aihub.runtime import Runtime, open_runtime
from aihub.services.auth import authenticate
from aihub.services.executors import attempt_executor_events, describe_attempt
from aihub.services.runs import stop_run
from aihub.services.users import create_user
from aihub.settings import Settings
from aihub.storage.local import LocalArtifactStore
from tests.engine.support import node_log, start_run, wait_for_run
from tests.k8s.conftest import NAMESPACE
from tests.k8s.emulator import Emulator
from tests.k8s.kubelet import Kubelet
from tests.k8s.platform import Platform
from tests.k8s.support import log_contains

pytestmark = pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: emulator
  cluster: {{server: "{url}"}}
users:
- name: tester
  user: {{}}
contexts:
- name: emulator
  context: {{cluster: emulator, user: tester, namespace: {namespace}}}
current-context: emulator
"""


async def run_token_is_valid(token: str) -> bool:
    return await authenticate(token) is not None


@pytest.fixture
async def k8s_runtime(
    settings: Settings,
    emulator: Emulator,
    kubelet: Kubelet,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[Runtime, Platform]]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(url=emulator.url, namespace=NAMESPACE))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    settings.executor = "kubernetes"
    settings.kubernetes_namespace = NAMESPACE
    settings.stop_grace_seconds = 2.0
    settings.ensure_dirs()
    platform = Platform(
        LocalArtifactStore(settings.data_dir / "artifacts"), tmp_path / "uploads", run_token_is_valid
    )
    settings.api_url = await platform.serve()
    try:
        async with open_runtime(settings) as runtime:
            yield runtime, platform
    finally:
        await platform.close()


async def test_a_two_node_workflow_passes_text_and_path_outputs_between_pods(
    k8s_runtime: tuple[Runtime, Platform], emulator: Emulator
) -> None:
    rt, platform = k8s_runtime
    assert isinstance(rt.executor, KubernetesExecutor)
    user: User = await create_user("alice", "alice-password-1")
    spec = {
        "name": "k8s-demo",
        "params": [{"name": "greeting", "default": "hello"}],
        "nodes": [
            {
                "name": "step1",
                "image": "python:3.11-slim",
                "command": (
                    "echo outparam1 > /podfs/outparam1.txt\n"
                    "echo outparam2 > /podfs/outparam2.txt\n"
                    "mkdir -p /podfs/outparam3 && touch /podfs/outparam3/file1\n"
                    'echo "step1 says $msg"\n'
                ),
                "inputs": [{"name": "msg", "from": "params.greeting"}],
                "outputs": [
                    {"name": "output_param1", "path": "/podfs/outparam1.txt", "type": "text"},
                    {"name": "output_param2", "path": "/podfs/outparam2.txt", "type": "path"},
                    {"name": "output_param3", "path": "/podfs/outparam3", "type": "path"},
                ],
            },
            {
                "name": "step2",
                "image": "python:3.11-slim",
                "inputs": [
                    {"name": "p1", "from": "step1.output_param1"},
                    {"name": "p2", "from": "step1.output_param2"},
                    {"name": "p3", "from": "step1.output_param3"},
                ],
                "command": 'echo "$p1"; cat "$p2"; ls "$p3"',
            },
        ],
    }
    run = await start_run(rt, user, spec, greeting="hi there")
    run = await wait_for_run(rt, run.id)

    assert run.status is RunStatus.SUCCEEDED, run.message
    assert await node_log(rt, run.id, "step1") == "step1 says hi there\n"
    assert await node_log(rt, run.id, "step2") == "outparam1\noutparam2\nfile1\n"
    step1 = await NodeRun.get(run_id=run.id, name="step1")
    assert step1.outputs["output_param1"]["value"] == "outparam1"
    digests = {step1.outputs[n]["digest"] for n in ("output_param2", "output_param3")}
    assert all([await rt.artifacts.exists(d) for d in digests])
    # the consumer's pod fetched exactly those artifacts, with a run token the platform accepted
    fetched = {path.rsplit("/", 1)[1] for method, path, _ in platform.requests if method == "GET"}
    assert fetched == digests
    assert len([r for r in platform.requests if r[1] == "/artifacts/upload"]) == 2
    # one pod per attempt, named and labelled after it, deleted once archived
    created = [q for m, p, q in emulator.requests if m == "POST" and p.endswith("/pods")]
    assert len(created) == 2
    assert emulator.pods(NAMESPACE) == []
    attempt = await Attempt.get(node_run_id=step1.id, number=1)
    assert attempt.executor == "kubernetes"
    container = await describe_attempt(rt.engine, attempt.handle)
    assert container["pod"] == f"aihub-r{run.id}-step1-a1"
    assert container["state"] == "exited with code 0 (Completed)"
    # the events tab: the pod's Kubernetes events, kept after the pod is gone
    reasons = [e["reason"] for e in await attempt_executor_events(rt.engine, attempt.handle)]
    assert "Scheduled" in reasons or "Started" in reasons, reasons


async def test_a_failing_node_fails_the_run_with_its_exit_code(k8s_runtime: tuple[Runtime, Platform]) -> None:
    rt, _ = k8s_runtime
    user = await create_user("bob", "bob-password-1")
    spec = {"name": "k8s-fail", "nodes": [{"name": "bad", "command": "echo about to fail; exit 3"}]}
    run = await wait_for_run(rt, (await start_run(rt, user, spec)).id)
    assert run.status is RunStatus.FAILED
    node = await NodeRun.get(run_id=run.id, name="bad")
    assert node.exit_code == 3
    assert await node_log(rt, run.id, "bad") == "about to fail\n"


async def test_stopping_a_run_deletes_its_running_pod(
    k8s_runtime: tuple[Runtime, Platform], emulator: Emulator, kubelet: Kubelet
) -> None:
    rt, _ = k8s_runtime
    user = await create_user("carol", "carol-password-1")
    spec = {
        "name": "k8s-stop",
        "nodes": [
            {"name": "slow", "command": "echo started; while :; do sleep 0.05; done"},
            {"name": "later", "command": "echo never", "depends_on": ["slow"]},
        ],
    }
    run = await start_run(rt, user, spec)
    pod = f"aihub-r{run.id}-slow-a1"
    await log_contains(emulator, pod, b"started")
    await stop_run(rt.bus, user, run.id)
    run = await wait_for_run(rt, run.id)
    assert run.status is RunStatus.STOPPED
    slow = await NodeRun.get(run_id=run.id, name="slow")
    later = await NodeRun.get(run_id=run.id, name="later")
    assert (slow.status, later.status) == (NodeStatus.STOPPED, NodeStatus.STOPPED)
    assert emulator.count("DELETE", f"/pods/{pod}", gracePeriodSeconds="2") == 1
    assert kubelet.signals[pod] == ["SIGTERM"]
    assert emulator.pods(NAMESPACE) == []
    assert await node_log(rt, run.id, "slow") == "started\n"
