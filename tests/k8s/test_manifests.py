"""``deploy/kubernetes/`` (issue 20): every overlay renders with ``kubectl kustomize`` and every rendered object
validates offline against the Kubernetes schemas of each version docs/deploy.md claims (``kubernetes-validate``,
strict: an unknown field fails); the pieces fit together (probes, resources, the Role's namespace, the node
pods' NetworkPolicy matching the executor's pods)."""

from __future__ import annotations

import copy
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from aihub.engine.executors.base import Job, JobKey, Resources
from aihub.engine.executors.k8s_pod import PodOptions, build_pod

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(path.name for path in (KUBERNETES / "overlays").iterdir() if path.is_dir())
#: the Kubernetes versions docs/deploy.md claims (``preStop.sleep`` needs 1.30)
VERSIONS = [f"1.{minor}.0" for minor in range(30, 38)]

pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (Debian kubernetes-client) is not installed"
)


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    """The objects ``kubectl kustomize`` makes of ``overlay``."""
    result = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def find(objects: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def test_the_claimed_versions_are_in_the_docs() -> None:
    text = (ROOT / "docs" / "deploy.md").read_text()
    assert f"Kubernetes {VERSIONS[0][:-2]} to {VERSIONS[-1][:-2]}" in text


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_validates(overlay: str) -> None:
    objects = render(overlay)
    assert len(objects) >= 12
    failures = []
    for version in VERSIONS:
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                failures.append(f"{version} {obj['kind']}/{obj['metadata']['name']}: {exc.message}")
    assert not failures, "\n".join(failures)


def test_the_validation_catches_a_mistake() -> None:
    deployment = copy.deepcopy(find(render("production"), "Deployment", "aihub-api"))
    deployment["spec"]["replica"] = 2  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_probe_and_request(overlay: str) -> None:
    objects = render(overlay)
    for name, role in (("aihub-api", "api"), ("aihub-worker", "worker")):
        deployment = find(objects, "Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == ["serve", "--role", role]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert pod["serviceAccountName"] == "aihub"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["terminationGracePeriodSeconds"] > 10  # the graceful shutdown's own timeout
        secret = next(source["secretRef"]["name"] for source in container["envFrom"] if "secretRef" in source)
        find(objects, "Secret", secret)  # the generated Secret's hashed name
    job = find(objects, "Job", "aihub-migrate")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_the_production_overlay_has_an_ingress_and_disruption_budgets() -> None:
    objects = render("production")
    ingress = find(objects, "Ingress", "aihub")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "aihub-api"
    api_budget = find(objects, "PodDisruptionBudget", "aihub-api")
    assert api_budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "api"
    find(objects, "PodDisruptionBudget", "aihub-worker")
    assert find(objects, "Deployment", "aihub-api")["spec"]["replicas"] == 2


def test_the_role_is_in_the_runs_namespace_for_the_service_account() -> None:
    objects = render("production")
    settings = find(objects, "ConfigMap", "aihub-settings")["data"]
    runs = settings["AIHUB_KUBERNETES_NAMESPACE"]
    assert find(objects, "Role", "aihub-runs")["metadata"]["namespace"] == runs
    binding = find(objects, "RoleBinding", "aihub-runs")
    assert binding["metadata"]["namespace"] == runs
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "aihub", "namespace": "aihub"}]
    assert find(objects, "Namespace", runs)
    # nothing cluster-wide is granted
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "Exists", expression
        if expression["key"] not in labels:
            return False
    return True


def test_node_pods_have_no_token_and_reach_only_the_api() -> None:
    objects = render("production")
    settings = find(objects, "ConfigMap", "aihub-settings")["data"]
    job = Job(
        key=JobKey(run_id=7, node="train", attempt=1),
        image="python:3.11-slim",
        argv=["sh", "-c", "echo hi"],
        env={},
        resources=Resources(cpu_millis=500, memory_mib=256),
    )
    options = PodOptions(settings["AIHUB_KUBERNETES_NAMESPACE"], "busybox:1.36.1-musl", "python:3.11-slim")
    pod = build_pod(job, options, mark="m1", input_kinds={})
    assert pod["spec"]["automountServiceAccountToken"] is False
    policy = find(objects, "NetworkPolicy", "aihub-node-pods")
    assert policy["metadata"]["namespace"] == pod["metadata"]["namespace"]
    assert _matches(policy["spec"]["podSelector"], pod["metadata"]["labels"])
    assert not _matches(policy["spec"]["podSelector"], {"app.kubernetes.io/name": "aihub"})
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert policy["spec"]["ingress"] == []  # nothing connects to a node pod
    api, store, dns = policy["spec"]["egress"]
    api_pods = find(objects, "Deployment", "aihub-api")["spec"]["template"]["metadata"]["labels"]
    assert _matches(api["to"][0]["podSelector"], api_pods)
    assert not _matches(
        api["to"][0]["podSelector"],
        find(objects, "Deployment", "aihub-worker")["spec"]["template"]["metadata"]["labels"],
    )
    assert api["ports"] == [{"protocol": "TCP", "port": int(settings["AIHUB_API_URL"].rsplit(":", 1)[1])}]
    assert {port["port"] for port in dns["ports"]} == {53}
    # the object store of the settings (presigned transfers): its Service's namespace and port
    endpoint = urlsplit(settings["AIHUB_S3_ENDPOINT_URL"])
    assert endpoint.hostname is not None and endpoint.hostname.endswith(".svc")
    namespace = endpoint.hostname.split(".")[1]
    assert store["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}]
    assert store["ports"] == [{"protocol": "TCP", "port": endpoint.port}]


def test_the_first_apply_of_docs_deploy_runs_the_migrations_without_the_deployments() -> None:
    """docs/deploy.md applies ``-l 'app.kubernetes.io/component notin (api,worker)'`` first: the migration Job
    and everything it needs, and no Deployment (they start after the migrations completed)."""
    command = "kubectl apply -f aihub.yaml -l 'app.kubernetes.io/component notin (api,worker)'"
    assert command in (ROOT / "docs" / "deploy.md").read_text()
    first = [
        o
        for o in render("production")
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") not in ("api", "worker")
    ]
    kinds = {o["kind"] for o in first}
    assert {"Namespace", "ConfigMap", "Secret", "Job", "ServiceAccount", "Role", "RoleBinding"} <= kinds
    assert "Deployment" not in kinds
