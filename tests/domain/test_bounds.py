"""Spec bounds checked at save (issue 11, point 6): document bytes, node count, command length under the
kernel's MAX_ARG_STRLEN, variables' sizes, NUL characters and the wrappers' reserved ``_aihub_`` names."""

from __future__ import annotations

from typing import Any

import pytest

from aihub.domain.bounds import MAX_ARG_STRLEN, SpecLimits, check_document, check_run_params, check_spec
from aihub.domain.spec import SpecError, parse_spec


def _spec(**node: Any) -> dict[str, Any]:
    return {
        "name": "bounded",
        "params": [{"name": "p", "default": "x"}],
        "nodes": [{"name": "a", "command": "true", **node}],
    }


def _issues(spec: dict[str, Any], limits: SpecLimits | None = None) -> list[str]:
    limits = limits or SpecLimits()
    try:
        check_document(spec, limits)
        check_spec(parse_spec(spec), limits)
    except SpecError as exc:
        return [str(issue) for issue in exc.issues]
    return []


def test_a_command_the_kernel_would_refuse_is_refused_at_save() -> None:
    """The hazard: a 5 MB command was saved and failed at launch with 'Argument list too long'."""
    assert _issues(_spec(command="x" * (MAX_ARG_STRLEN - 1))) == []
    for size in (MAX_ARG_STRLEN, 1024**2):
        [issue] = _issues(_spec(command="x" * size))
        assert issue == f"nodes[0] 'a': command: is {size} bytes, more than the limit of {MAX_ARG_STRLEN - 1}"
    # bytes, not characters: three bytes each in UTF-8
    [issue] = _issues(_spec(command="流" * (MAX_ARG_STRLEN // 3 + 1)))
    assert "command: is" in issue


@pytest.mark.parametrize(
    ("node", "field"),
    [
        ({"command": "echo a\x00b"}, "command"),
        ({"env": {"X": "a\x00"}}, "env.X"),
        ({"inputs": [{"name": "v", "value": "\x00"}]}, "inputs[0].value"),
    ],
)
def test_nul_characters_are_refused(node: dict[str, Any], field: str) -> None:
    [issue] = _issues(_spec(**node))
    assert issue == f"nodes[0] 'a': {field}: contains a NUL character, which no command or variable can hold"


def test_nul_in_a_param_default_and_in_run_params() -> None:
    spec = _spec()
    spec["params"][0]["default"] = "a\x00b"
    assert _issues(spec) == [
        "params[0] 'p': default: contains a NUL character, which no command or variable can hold"
    ]
    with pytest.raises(SpecError, match="param 'p': p: contains a NUL"):
        check_run_params({"p": "\x00"})
    with pytest.raises(SpecError, match="more than the limit of 10"):
        check_run_params({"p": "x" * 11}, SpecLimits(max_param_bytes=10))
    check_run_params({"p": "x" * 10}, SpecLimits(max_param_bytes=10))


@pytest.mark.parametrize(
    ("node", "field", "name"),
    [
        ({"env": {"_aihub_log": "/etc/passwd"}}, "env._aihub_log", "_aihub_log"),
        ({"env": {"_AIHUB_TERM": "1"}}, "env._AIHUB_TERM", "_AIHUB_TERM"),
        ({"inputs": [{"name": "_Aihub_scratch", "value": "/"}]}, "inputs[0].name", "_Aihub_scratch"),
        ({"inputs": [{"name": "_aihub_x", "from": "params.p"}]}, "inputs[0].name", "_aihub_x"),
    ],
)
def test_the_wrappers_reserved_names_are_refused(node: dict[str, Any], field: str, name: str) -> None:
    """The hazard: a node env named like the shim's own variables redirected its log or its mounts."""
    [issue] = _issues(_spec(**node))
    assert issue == (
        f"nodes[0] 'a': {field}: '{name}' starts with _aihub_, which is reserved for the platform's wrapper scripts"
    )


def test_a_node_s_variables_are_bounded_one_by_one_and_together() -> None:
    [one] = _issues(_spec(env={"BIG": "v" * MAX_ARG_STRLEN}))
    assert one.startswith("nodes[0] 'a': env.BIG: is 131072 bytes, more than the limit of 131067")
    many = {f"V{i}": "v" * 100_000 for i in range(12)}
    [together] = _issues(_spec(env=many))
    assert together.startswith("nodes[0] 'a': env: the node's variables take 1200")
    assert together.endswith("more than the limit of 1048576")


def test_document_bytes_and_node_count() -> None:
    """The hazard: a 4.5 MB spec of 22,000 nodes held the event loop for 5 s."""
    limits = SpecLimits(max_bytes=2000, max_nodes=5)
    nodes = [{"name": f"n{i}", "command": "true"} for i in range(6)]
    assert _issues({"name": "many", "nodes": nodes}, limits) == [
        "document: nodes: 6 nodes, more than the limit of 5 (AIHUB_MAX_SPEC_NODES)"
    ]
    big = _spec(description="d" * 3000)
    [issue] = _issues(big, limits)
    assert (
        issue.startswith("document: spec: the spec is ") and "limit of 2000 (AIHUB_MAX_SPEC_BYTES)" in issue
    )
    text = "name: t\nnodes:\n  - {name: a, command: true}\n" + "# padding\n" * 300
    with pytest.raises(SpecError, match="AIHUB_MAX_SPEC_BYTES"):
        check_document(text, limits)
    with pytest.raises(SpecError, match="AIHUB_MAX_SPEC_BYTES"):
        check_document(text.encode(), limits)
    check_document(text[:200], limits)
