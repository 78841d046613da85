"""The Role of ``deploy/kubernetes/`` grants exactly what the Kubernetes executor and the build backend use
(issue 20): every call they make in the Kubernetes tests is recorded at the API-server emulator as the
``(apiGroup, resource, verb)`` RBAC would check (``tests/k8s/emulator.py``: ``rbac_call``), and the Role's
rules must cover all of them and grant nothing else.

The calls are those of this session when it ran every other test of ``tests/k8s`` before this file (``make
test`` does: the files run in name order); otherwise (this file alone, a ``-k`` selection) those tests run first
in a pytest subprocess that writes its calls to a file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.emulator import SESSION_CALLS
from tests.k8s.test_manifests import find, render

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve()

Call = tuple[str, str, str]  # (apiGroup, resource, verb)

# run alone, the fixture runs the other Kubernetes tests first (about a minute)
pytestmark = pytest.mark.timeout(900)


def _other_k8s_tests() -> list[str]:
    """The node ids of every test in tests/k8s that talks to the emulator (collected by pytest)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests/k8s"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    ids = [line for line in result.stdout.splitlines() if "::" in line]
    assert ids, result.stdout + result.stderr
    return [i for i in ids if not i.startswith(("tests/k8s/test_rbac.py", "tests/k8s/test_manifests.py"))]


@pytest.fixture(scope="module")
def recorded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> set[Call]:
    others = _other_k8s_tests()
    ran = {item.nodeid for item in request.session.items}
    # every other Kubernetes test is in this session and ran before this file (tests/k8s files run in name order)
    if set(others) <= ran and SESSION_CALLS:
        return set(SESSION_CALLS)
    target = tmp_path_factory.mktemp("k8s-calls") / "calls.json"
    environ = {**os.environ, "AIHUB_K8S_CALLS_FILE": str(target)}
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/k8s"),
            *("--ignore", str(HERE), "--ignore", str(HERE.with_name("test_manifests.py"))),
        ],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, "the Kubernetes tests failed:\n" + result.stdout[-5000:]
    return {tuple(call) for call in json.loads(target.read_text())}  # type: ignore[misc]


def granted(role: dict[str, Any]) -> set[Call]:
    """Every ``(apiGroup, resource, verb)`` a Role's rules grant (no wildcards allowed)."""
    calls: set[Call] = set()
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"a wildcard in {field}: {rule}"
        assert not rule.get("resourceNames"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    calls.add((group, resource, verb))
    return calls


def check(role: dict[str, Any], calls: set[Call]) -> None:
    """Fail naming what the Role lacks and what it grants that nothing used."""
    rules = granted(role)
    missing, unused = sorted(calls - rules), sorted(rules - calls)
    problems = [f"the Role lacks {group or 'core'}/{resource}: {verb}" for group, resource, verb in missing]
    problems += [
        f"the Role grants unused {group or 'core'}/{resource}: {verb}" for group, resource, verb in unused
    ]
    assert not problems, "\n".join(problems)


def _role() -> dict[str, Any]:
    return find(render("production"), "Role", "aihub-runs")


def test_the_role_grants_exactly_the_recorded_calls(recorded: set[Call]) -> None:
    # the executor and the builder both ran: pods, their logs and events, and the build Jobs
    assert {("", "pods", "create"), ("", "pods/log", "get"), ("batch", "jobs", "create")} <= recorded
    check(_role(), recorded)


def test_a_missing_verb_fails(recorded: set[Call]) -> None:
    role = _role()
    pods = next(rule for rule in role["rules"] if rule["resources"] == ["pods"])
    pods["verbs"].remove("delete")
    with pytest.raises(AssertionError, match="the Role lacks core/pods: delete"):
        check(role, recorded)


def test_an_unused_verb_fails(recorded: set[Call]) -> None:
    role = _role()
    jobs = next(rule for rule in role["rules"] if rule["resources"] == ["jobs"])
    jobs["verbs"].append("patch")
    with pytest.raises(AssertionError, match="the Role grants unused batch/jobs: patch"):
        check(role, recorded)
