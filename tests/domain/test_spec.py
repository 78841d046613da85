"""Workflow spec v1 (SPEC.md §2): parsing, every validation rule, messages, export, run params, big specs."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from aihub.domain.spec import (
    InputDecl,
    ModuleInterface,
    NodeSpec,
    OutputDecl,
    SpecError,
    SpecIssue,
    WorkflowSpec,
    load_spec_file,
    parse_spec,
    validate_run_params,
)

Mutation = Callable[[dict[str, Any]], None]


def seed() -> dict[str, Any]:
    """The seed's demo (§2), trimmed: step1 makes outputs, step2 reads them, a param and a literal."""
    return {
        "name": "pass-params-demo",
        "params": [{"name": "greeting", "default": "hello"}],
        "nodes": [
            {
                "name": "step1",
                "command": "echo hi > /tmp/o1.txt",
                "outputs": [
                    {"name": "output_param1", "path": "/tmp/o1.txt", "type": "text"},
                    {"name": "output_param2", "path": "/tmp/o2", "type": "path"},
                ],
            },
            {
                "name": "step2",
                "depends_on": ["step1"],
                "command": "echo $x",
                "inputs": [
                    {"name": "x", "from": "step1.output_param1"},
                    {"name": "msg", "from": "params.greeting"},
                    {"name": "mode", "value": "fast"},
                ],
            },
        ],
    }


def put(*path: str | int, value: object) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def add(*path: str | int, value: object) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path:
            target = (
                target[key] if not isinstance(target, dict) or key in target else target.setdefault(key, [])
            )
        target.append(value)

    return mutate


def drop(*path: str | int) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def issues_of(data: object, **known: Any) -> list[SpecIssue]:
    with pytest.raises(SpecError) as info:
        parse_spec(data, **known)  # type: ignore[arg-type]
    return info.value.issues


def mutated(*mutations: Mutation) -> dict[str, Any]:
    data = seed()
    for mutation in mutations:
        mutation(data)
    return data


MODULE_NODE = {
    "name": "train",
    "module": "trainer",
    "inputs": [{"name": "dataset", "from": "params.greeting"}],
}
TRAINER = ModuleInterface(
    inputs=["dataset"],
    outputs=[OutputDecl(name="model", path="/tmp/model", type="path")],
    env={"EPOCHS": "3"},
)


# --- the valid seed ----------------------------------------------------------------------------------------


def test_seed_spec_parses_into_models() -> None:
    spec = parse_spec(seed())

    assert spec.name == "pass-params-demo"
    assert spec.params[0].default == "hello"
    step2 = spec.node("step2")
    assert [decl.name for decl in step2.inputs] == ["x", "msg", "mode"]
    assert step2.inputs[0].source == "step1.output_param1"
    assert step2.inputs[2].value == "fast"
    assert (step2.cluster, step2.task_type, step2.sku_count, step2.retries, step2.cache) == (
        "local",
        "compute",
        1,
        0,
        True,
    )


def test_seed_yaml_from_spec_md_parses_with_all_node_fields() -> None:
    text = """
name: pass-params-demo
description: Demo of parameter passing
params:
  - name: greeting
    description: what to say
    default: hello
nodes:
  - name: step1
    image: python:3.11-slim
    command: |
      echo "outparam1" > /tmp/outparam1.txt
    outputs:
      - {name: output_param1, path: /tmp/outparam1.txt, type: text}
  - name: train
    module: image-classifier-train
    inputs: [{name: dataset, from: params.greeting}]
    task_type: compute
    cluster: rtx2080x8
    sku_count: 1
    retries: 2
    env: {EPOCHS: "3"}
    storages: [hw-data]
"""
    spec = parse_spec(text)

    train = spec.node("train")
    assert (train.module, train.cluster, train.retries, train.env, train.storages) == (
        "image-classifier-train",
        "rtx2080x8",
        2,
        {"EPOCHS": "3"},
        ["hw-data"],
    )
    assert spec.node("step1").command == 'echo "outparam1" > /tmp/outparam1.txt\n'


# --- every rule: one bad change to the seed, one precise issue ---------------------------------------------

RULES: list[tuple[str, Mutation, str, str]] = [
    (
        "duplicate param",
        add("params", value={"name": "greeting"}),
        "params[1] 'greeting': param name 'greeting' is already used by params[0]",
        "name",
    ),
    (
        "duplicate node",
        add("nodes", value={"name": "step1", "command": "true"}),
        "nodes[2] 'step1': node name 'step1' is already used by nodes[0]",
        "name",
    ),
    (
        "duplicate input",
        add("nodes", 1, "inputs", value={"name": "x", "value": "1"}),
        "nodes[1] 'step2': input name 'x' is used twice: inputs[0] and inputs[3]",
        "inputs[3].name",
    ),
    (
        "duplicate output",
        add("nodes", 0, "outputs", value={"name": "output_param1", "path": "/tmp/x", "type": "text"}),
        "nodes[0] 'step1': output name 'output_param1' is used twice: outputs[0] and outputs[2]",
        "outputs[2].name",
    ),
    (
        "unknown param",
        put("nodes", 1, "inputs", 1, "from", value="params.greting"),
        "nodes[1] 'step2': input 'msg' refers to 'params.greting', but there is no param 'greting'"
        " (did you mean 'greeting'?)",
        "inputs[1].from",
    ),
    (
        "unknown node",
        put("nodes", 1, "inputs", 0, "from", value="ghost.out"),
        "nodes[1] 'step2': input 'x' refers to 'ghost.out', but there is no node 'ghost'",
        "inputs[0].from",
    ),
    (
        "unknown output",
        put("nodes", 1, "inputs", 0, "from", value="step1.nope"),
        "nodes[1] 'step2': input 'x' refers to 'step1.nope', but node 'step1' has no output 'nope'"
        " (its outputs: output_param1, output_param2)",
        "inputs[0].from",
    ),
    (
        "input from own node",
        add("nodes", 0, "inputs", value={"name": "me", "from": "step1.output_param1"}),
        "nodes[0] 'step1': input 'me' refers to 'step1.output_param1', but a node cannot use its own outputs",
        "inputs[0].from",
    ),
    (
        "depends_on itself",
        put("nodes", 1, "depends_on", value=["step2"]),
        "nodes[1] 'step2': depends_on names the node itself ('step2')",
        "depends_on[0]",
    ),
    (
        "unknown node, with a suggestion",
        put("nodes", 1, "inputs", 0, "from", value="stepp1.output_param1"),
        "nodes[1] 'step2': input 'x' refers to 'stepp1.output_param1', but there is no node 'stepp1'"
        " (did you mean 'step1'?)",
        "inputs[0].from",
    ),
    (
        "depends_on unknown",
        put("nodes", 1, "depends_on", value=["step1", "nope"]),
        "nodes[1] 'step2': depends_on names 'nope', but there is no node 'nope'",
        "depends_on[1]",
    ),
    (
        "cycle through depends_on and an input",
        put("nodes", 0, "depends_on", value=["step2"]),
        "nodes[0] 'step1': cycle: step1 -> step2 -> step1",
        "depends_on[0]",
    ),
    (
        "from and value",
        put("nodes", 1, "inputs", 2, "from", value="params.greeting"),
        "nodes[1] 'step2': inputs[2]: input 'mode' needs exactly one of 'from' and 'value'",
        "inputs[2]",
    ),
    (
        "neither from nor value",
        drop("nodes", 1, "inputs", 2, "value"),
        "nodes[1] 'step2': inputs[2]: input 'mode' needs exactly one of 'from' and 'value'",
        "inputs[2]",
    ),
    (
        "relative output path",
        put("nodes", 0, "outputs", 0, "path", value="tmp/o1.txt"),
        "nodes[0] 'step1': outputs[0].path: 'tmp/o1.txt' must be an absolute path",
        "outputs[0].path",
    ),
    (
        "root output path",
        put("nodes", 0, "outputs", 0, "path", value="/tmp/.."),
        "nodes[0] 'step1': outputs[0].path: must not be '/'",
        "outputs[0].path",
    ),
    (
        "output type",
        put("nodes", 0, "outputs", 1, "type", value="file"),
        "nodes[0] 'step1': outputs[1].type: must be 'text' or 'path' (got 'file')",
        "outputs[1].type",
    ),
    (
        "output without type",
        drop("nodes", 0, "outputs", 1, "type"),
        "nodes[0] 'step1': outputs[1].type: is required",
        "outputs[1].type",
    ),
    (
        "retries below 0",
        put("nodes", 0, "retries", value=-1),
        "nodes[0] 'step1': retries: must be at least 0 (got -1)",
        "retries",
    ),
    (
        "retries above 100",
        put("nodes", 0, "retries", value=101),
        "nodes[0] 'step1': retries: must be at most 100 (got 101)",
        "retries",
    ),
    (
        "retries not a number",
        put("nodes", 0, "retries", value="twice"),
        "nodes[0] 'step1': retries: must be an integer (got 'twice')",
        "retries",
    ),
    (
        "sku_count below 1",
        put("nodes", 0, "sku_count", value=0),
        "nodes[0] 'step1': sku_count: must be at least 1 (got 0)",
        "sku_count",
    ),
    (
        "task type",
        put("nodes", 0, "task_type", value="gpu"),
        "nodes[0] 'step1': task_type: must be 'compute' or 'monitor' (got 'gpu')",
        "task_type",
    ),
    (
        "env overrides AI_HUB_",
        put("nodes", 0, "env", value={"AI_HUB_TOKEN": "x"}),
        "nodes[0] 'step1': env.AI_HUB_TOKEN: 'AI_HUB_TOKEN' starts with AI_HUB_, "
        "which is reserved for the platform's variables",
        "env.AI_HUB_TOKEN",
    ),
    (
        "input named AI_HUB_",
        put("nodes", 1, "inputs", 2, "name", value="AI_HUB_USER_ID"),
        "nodes[1] 'step2': inputs[2].name: 'AI_HUB_USER_ID' starts with AI_HUB_, "
        "which is reserved for the platform's variables",
        "inputs[2].name",
    ),
    (
        "env key not a variable name",
        put("nodes", 0, "env", value={"MY-VAR": "x"}),
        "nodes[0] 'step1': env.MY-VAR: 'MY-VAR' is not a valid name: use letters, digits and '_', "
        "not starting with a digit (it becomes a shell variable)",
        "env.MY-VAR",
    ),
    (
        "env value a list",
        put("nodes", 0, "env", value={"A": [1]}),
        "nodes[0] 'step1': env.A: must be a string, number or boolean (got a list)",
        "env.A",
    ),
    (
        "env and input set the same variable",
        put("nodes", 1, "env", value={"mode": "slow"}),
        "nodes[1] 'step2': env 'mode' and input 'mode' would set the same variable",
        "env.mode",
    ),
    (
        "plain node without command",
        put("nodes", 0, "command", value="  \n"),
        "nodes[0] 'step1': a plain node needs a command (or a module)",
        "command",
    ),
    (
        "module node with a command",
        add("nodes", value=MODULE_NODE | {"command": "python train.py"}),
        "nodes[2] 'train': a module node takes its command from module 'trainer'; remove it",
        "command",
    ),
    (
        "module node with outputs",
        add("nodes", value=MODULE_NODE | {"outputs": [{"name": "m", "path": "/m", "type": "path"}]}),
        "nodes[2] 'train': a module node takes its outputs from module 'trainer'; remove it",
        "outputs",
    ),
    (
        "module node with an image",
        add("nodes", value=MODULE_NODE | {"image": "python:3.11"}),
        "nodes[2] 'train': a module node takes its image from module 'trainer'; remove it",
        "image",
    ),
    (
        "module name pattern",
        add("nodes", value=MODULE_NODE | {"module": "Trainer"}),
        "nodes[2] 'train': module: 'Trainer' is not a valid module name: use lowercase letters, digits and '-'",
        "module",
    ),
    (
        "node named params",
        add("nodes", value={"name": "params", "command": "true"}),
        "nodes[2] 'params': name: 'params' is reserved (references 'params.<param>' use it)",
        "name",
    ),
    (
        "unknown node field",
        put("nodes", 1, "dependson", value=["step1"]),
        "nodes[1] 'step2': dependson: unknown field (did you mean 'depends_on'?)",
        "dependson",
    ),
    (
        "unknown input field",
        put("nodes", 1, "inputs", 0, "form", value="x"),
        "nodes[1] 'step2': inputs[0].form: unknown field (did you mean 'from'?)",
        "inputs[0].form",
    ),
    (
        "unknown workflow field",
        put("parameters", value=[]),
        "workflow: parameters: unknown field (did you mean 'params'?)",
        "parameters",
    ),
    (
        "node without name",
        drop("nodes", 1, "name"),
        "nodes[1]: name: is required",
        "name",
    ),
    (
        "node not a mapping",
        add("nodes", value=["step3"]),
        "nodes[2]: must be a mapping (got a list)",
        "",
    ),
    (
        "nodes missing",
        drop("nodes"),
        "workflow: nodes: a workflow needs at least one node",
        "nodes",
    ),
    (
        "nodes empty",
        put("nodes", value=[]),
        "workflow: nodes: a workflow needs at least one node",
        "nodes",
    ),
    (
        "nodes not a list",
        put("nodes", value={"step1": {}}),
        "workflow: nodes: must be a list (got a mapping)",
        "nodes",
    ),
    (
        "params not a list",
        put("params", value="greeting"),
        "workflow: params: must be a list (got a string)",
        "params",
    ),
    (
        "param default a mapping",
        put("params", 0, "default", value={"a": 1}),
        "params[0] 'greeting': default: must be a string, number or boolean (got a mapping)",
        "default",
    ),
    (
        "workflow name missing",
        drop("name"),
        "workflow: name: is required",
        "name",
    ),
    (
        "command not a string",
        put("nodes", 0, "command", value=["echo", "hi"]),
        "nodes[0] 'step1': command: must be a string (got ['echo', 'hi'])",
        "command",
    ),
]


@pytest.mark.parametrize(("mutation", "expected", "field"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_each_rule_gives_one_precise_issue(mutation: Mutation, expected: str, field: str) -> None:
    issues = issues_of(mutated(mutation))

    assert [str(issue) for issue in issues] == [expected]
    assert issues[0].field == field


NAME_MESSAGE = "is not a valid name: use letters, digits and '_', not starting with a digit (it becomes a shell variable)"


@pytest.mark.parametrize("bad", ["9lives", "my-name", "has space", "", "ü", "name\n"])
@pytest.mark.parametrize(
    ("path", "location", "field"),
    [
        (("params", 0, "name"), "params[0]", "name"),
        (("nodes", 0, "name"), "nodes[0]", "name"),
        (("nodes", 1, "inputs", 2, "name"), "nodes[1] 'step2'", "inputs[2].name"),
        (("nodes", 0, "outputs", 1, "name"), "nodes[0] 'step1'", "outputs[1].name"),
    ],
)
def test_names_must_be_shell_variable_names(
    bad: str, path: tuple[str | int, ...], location: str, field: str
) -> None:
    issue = next(i for i in issues_of(mutated(put(*path, value=bad))) if i.field == field)

    assert issue.location in {location, f"{location} '{bad}'"}
    assert issue.message == f"{field}: {bad!r} {NAME_MESSAGE}"


@pytest.mark.parametrize("good", ["_", "a", "A_1", "snake_case", "CamelCase", "x" * 200])
def test_valid_names_are_accepted(good: str) -> None:
    spec = parse_spec(mutated(put("nodes", 1, "inputs", 2, "name", value=good)))

    assert spec.node("step2").inputs[2].name == good


@pytest.mark.parametrize(
    "bad", ["Pass-Params", "-demo", "demo_1", "a" * 64, " ", "图像 分类", "-训练", "图" * 64]
)
def test_workflow_name_pattern(bad: str) -> None:
    issues = issues_of(mutated(put("name", value=bad)))

    assert [str(i) for i in issues] == [
        f"workflow: name: {bad!r} is not a valid workflow name: use 1 to 63 letters (Chinese too; Latin ones "
        "lowercase), digits and '-', starting with a letter or digit"
    ]


def test_an_empty_workflow_name_is_required_not_invalid() -> None:
    """A new workflow's form before its name is typed: it says the name is wanted, not the name's whole rule."""
    issues = issues_of(mutated(put("name", value="")))

    assert [str(i) for i in issues] == ["workflow: name: is required"]


@pytest.mark.parametrize(
    "good", ["a", "0", "demo-2", "a" * 63, "图像分类-训练", "数据处理", "démo", "图" * 63]
)
def test_valid_workflow_names(good: str) -> None:
    assert parse_spec(mutated(put("name", value=good))).name == good


@pytest.mark.parametrize("bad", ["nodot", "a.b.c", "params.", ".x", "step 1.x", "step1.", "params.9"])
def test_from_must_be_a_param_or_node_output_reference(bad: str) -> None:
    issues = issues_of(mutated(put("nodes", 1, "inputs", 0, "from", value=bad)))

    assert [str(i) for i in issues] == [
        f"nodes[1] 'step2': inputs[0].from: {bad!r} is not a reference: use 'params.<param>' or '<node>.<output>'"
    ]


def test_cycle_of_three_nodes_names_the_path() -> None:
    data = {
        "name": "loop",
        "nodes": [
            {"name": "a", "command": "true", "depends_on": ["c"]},
            {"name": "b", "command": "true", "depends_on": ["a"]},
            {"name": "c", "command": "true", "depends_on": ["b"]},
            {"name": "free", "command": "true", "depends_on": ["c"]},
        ],
    }

    assert [str(i) for i in issues_of(data)] == ["nodes[0] 'a': cycle: a -> b -> c -> a"]


def test_cycle_through_inputs_points_at_the_input() -> None:
    data = {
        "name": "loop",
        "nodes": [
            {
                "name": "a",
                "command": "true",
                "inputs": [{"name": "i", "from": "b.o"}],
                "outputs": [_out("o")],
            },
            {
                "name": "b",
                "command": "true",
                "inputs": [{"name": "i", "from": "a.o"}],
                "outputs": [_out("o")],
            },
        ],
    }

    issues = issues_of(data)

    assert [(str(i), i.field) for i in issues] == [("nodes[0] 'a': cycle: a -> b -> a", "inputs[0].from")]


def test_every_cycle_is_reported() -> None:
    data = {
        "name": "loops",
        "nodes": [
            {"name": "a", "command": "true", "depends_on": ["b"]},
            {"name": "b", "command": "true", "depends_on": ["a"]},
            {"name": "c", "command": "true", "depends_on": ["d"]},
            {"name": "d", "command": "true", "depends_on": ["c"]},
        ],
    }

    assert [str(i) for i in issues_of(data)] == [
        "nodes[0] 'a': cycle: a -> b -> a",
        "nodes[2] 'c': cycle: c -> d -> c",
    ]


def _out(name: str) -> dict[str, str]:
    return {"name": name, "path": f"/tmp/{name}", "type": "text"}


# --- what the caller knows: clusters, storages, modules ---------------------------------------------------


def test_unknown_cluster_is_rejected_when_clusters_are_known() -> None:
    data = mutated(put("nodes", 0, "cluster", value="gpu"))

    assert [str(i) for i in issues_of(data, clusters=["rtx2080x8"])] == [
        "nodes[0] 'step1': unknown virtual cluster 'gpu' (known: local, rtx2080x8)"
    ]
    assert parse_spec(data).node("step1").cluster == "gpu"  # offline: not checked


def test_local_cluster_is_always_known() -> None:
    assert parse_spec(seed(), clusters=[]).node("step1").cluster == "local"


def test_unknown_storage_is_rejected_when_storages_are_known() -> None:
    data = mutated(put("nodes", 0, "storages", value=["hw-data", "nope"]))

    issues = issues_of(data, storages=["hw-data"])

    assert [(str(i), i.field) for i in issues] == [
        ("nodes[0] 'step1': unknown data storage 'nope' (known: hw-data)", "storages[1]")
    ]
    assert parse_spec(data).node("step1").storages == ["hw-data", "nope"]


def test_unknown_module_is_rejected_when_modules_are_known() -> None:
    data = mutated(add("nodes", value=MODULE_NODE | {"module": "trainr"}))

    assert [str(i) for i in issues_of(data, modules={"trainer": TRAINER})] == [
        "nodes[2] 'train': unknown module 'trainr' (did you mean 'trainer'?)"
    ]


def test_module_inputs_must_all_be_bound_and_known() -> None:
    data = mutated(add("nodes", value=MODULE_NODE | {"inputs": [{"name": "epochs", "value": 3}]}))

    issues = issues_of(data, modules={"trainer": TRAINER})

    assert [(str(i), i.field) for i in issues] == [
        ("nodes[2] 'train': module 'trainer' has no input 'epochs' (its inputs: dataset)", "inputs[0].name"),
        ("nodes[2] 'train': input 'dataset' of module 'trainer' is not bound", "inputs"),
    ]


def test_references_to_module_outputs_are_checked_against_the_module() -> None:
    consumer = {"name": "use", "command": "ls $m", "inputs": [{"name": "m", "from": "train.weights"}]}
    data = mutated(add("nodes", value=MODULE_NODE), add("nodes", value=consumer))

    assert [str(i) for i in issues_of(data, modules={"trainer": TRAINER})] == [
        "nodes[3] 'use': input 'm' refers to 'train.weights', but node 'train' has no output 'weights'"
        " (its outputs: model)"
    ]
    assert parse_spec(data).node("use").inputs[0].ref_output == "weights"  # offline: accepted


def test_module_node_that_binds_its_inputs_is_valid() -> None:
    consumer = {"name": "use", "command": "ls $m", "inputs": [{"name": "m", "from": "train.model"}]}
    data = mutated(add("nodes", value=MODULE_NODE), add("nodes", value=consumer))

    spec = parse_spec(data, clusters=[], storages=[], modules={"trainer": TRAINER})

    assert spec.topological_order() == ["step1", "step2", "train", "use"]
    assert spec.node("train").is_module


# --- documents ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", "the spec is empty"),
        ("# only a comment\n", "the spec is empty"),
        ("{}", "the spec is empty"),
        (b"", "the spec is empty"),
        ("- name: x\n", "the spec must be a mapping with 'name' and 'nodes' (got a list)"),
        ("[]", "the spec must be a mapping with 'name' and 'nodes' (got a list)"),
        ("just words", "the spec must be a mapping with 'name' and 'nodes' (got a string)"),
        ("42", "the spec must be a mapping with 'name' and 'nodes' (got a number)"),
        (
            "name: x\nnodes:\n  - name: a\n   command: b\n",
            "invalid YAML at line 4, column 4: did not find expected '-' indicator",
        ),
        ("name: x\nname: y\n", "invalid YAML at line 2, column 1: duplicate key 'name'"),
        ("name: x\n---\nname: y\n", "invalid YAML at line 2, column 1: but found another document"),
        (b"\xff\xfename: x", "not UTF-8 text (byte 0)"),
        ('{"name": "x", "name": "y"}', "invalid JSON: duplicate key 'name'"),
    ],
)
def test_document_errors(source: str | bytes, message: str) -> None:
    assert [str(i) for i in issues_of(source)] == [f"document: {message}"]


def test_json_text_bytes_with_bom_and_yaml_flow_style_parse() -> None:
    as_json = json.dumps(seed())

    assert parse_spec(as_json) == parse_spec(seed())
    assert parse_spec(("\ufeff" + as_json).encode()) == parse_spec(seed())
    assert parse_spec("{name: flow, nodes: [{name: a, command: 'true'}]}").node("a").command == "true"


def test_alias_bomb_is_rejected() -> None:
    """Hazard: a few hundred bytes of YAML aliases expand to billions of values (memory exhaustion)."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"{c}: &{c} [{', '.join(['*' + p] * 10)}]" for p, c in zip("abcdefg", "bcdefgh", strict=True)]

    assert [str(i) for i in issues_of("\n".join(lines))] == [
        "document: the document has more than 1000000 values once aliases are expanded"
    ]


def test_recursive_alias_is_rejected() -> None:
    assert [str(i) for i in issues_of("name: &a [*a]\n")] == ["document: recursive YAML alias at line 1"]


def test_ordinary_aliases_still_work() -> None:
    text = """
name: shared-env
nodes:
  - {name: a, command: echo $A, env: &env {A: "1", B: "2"}}
  - {name: b, command: echo $B, env: *env}
"""
    assert parse_spec(text).node("b").env == {"A": "1", "B": "2"}


def test_null_lists_and_descriptions_mean_empty() -> None:
    text = "name: nulls\ndescription:\nparams:\nnodes:\n  - name: a\n    command: 'true'\n    inputs:\n    env:\n"

    spec = parse_spec(text)

    assert (spec.description, spec.params, spec.node("a").inputs, spec.node("a").env) == ("", [], [], {})


# --- collecting everything in one pass ---------------------------------------------------------------------


def test_all_issues_are_reported_in_document_order() -> None:
    data = mutated(
        put("name", value="Bad Name"),
        put("nodes", 0, "retries", value=500),
        add("nodes", 0, "outputs", value={"name": "o", "path": "rel", "type": "text"}),
        put("nodes", 1, "inputs", 0, "from", value="ghost.out"),
        put("nodes", 1, "depends_on", value=["nope"]),
        add("nodes", value={"name": "step3", "command": "true", "cluster": "gpu"}),
    )

    issues = issues_of(data, clusters=["cpu"])

    assert [str(i) for i in issues] == [
        "workflow: name: 'Bad Name' is not a valid workflow name: use 1 to 63 letters (Chinese too; Latin ones "
        "lowercase), digits and '-', starting with a letter or digit",
        "nodes[0] 'step1': outputs[2].path: 'rel' must be an absolute path",
        "nodes[0] 'step1': retries: must be at most 100 (got 500)",
        "nodes[1] 'step2': input 'x' refers to 'ghost.out', but there is no node 'ghost'",
        "nodes[1] 'step2': depends_on names 'nope', but there is no node 'nope'",
        "nodes[2] 'step3': unknown virtual cluster 'gpu' (known: cpu, local)",
    ]


def test_a_broken_node_still_gets_its_references_checked() -> None:
    """Hazard: stopping at a node's first structural error hides its other mistakes until the next save."""
    data = mutated(
        put("nodes", 1, "retries", value=-3),
        add("nodes", 1, "inputs", value={"name": "bad", "from": "nodot"}),
        add("nodes", 1, "inputs", value={"name": "y", "from": "step1.nope"}),
    )

    issues = issues_of(data)

    assert [(str(i), i.field) for i in issues] == [
        (
            "nodes[1] 'step2': inputs[3].from: 'nodot' is not a reference: use 'params.<param>' or '<node>.<output>'",
            "inputs[3].from",
        ),
        ("nodes[1] 'step2': retries: must be at least 0 (got -3)", "retries"),
        (
            "nodes[1] 'step2': input 'y' refers to 'step1.nope', but node 'step1' has no output 'nope'"
            " (its outputs: output_param1, output_param2)",
            "inputs[4].from",
        ),
    ]


def test_references_to_a_broken_node_do_not_cause_follow_up_errors() -> None:
    data = mutated(put("nodes", 0, "outputs", 1, "type", value="dir"))

    assert [str(i) for i in issues_of(data)] == [
        "nodes[0] 'step1': outputs[1].type: must be 'text' or 'path' (got 'dir')"
    ]


# --- values, paths and references --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "text"), [(3, "3"), (0.5, "0.5"), (True, "true"), (False, "false"), ("x", "x")]
)
def test_scalars_are_kept_as_text(given: object, text: str) -> None:
    data = mutated(
        put("params", 0, "default", value=given),
        put("nodes", 1, "inputs", 2, "value", value=given),
        put("nodes", 0, "env", value={"V": given}),
    )

    spec = parse_spec(data)

    assert (spec.params[0].default, spec.node("step2").inputs[2].value, spec.node("step1").env["V"]) == (
        text,
    ) * 3


def test_yaml_numbers_become_their_written_text() -> None:
    spec = parse_spec(
        "name: n\nparams: [{name: lr, default: 0.01}, {name: n, default: 10}]\nnodes: [{name: a, command: x}]"
    )

    assert [p.default for p in spec.params] == ["0.01", "10"]


@pytest.mark.parametrize(
    ("given", "normal"), [("/tmp//a/./b/", "/tmp/a/b"), ("/tmp/x/../y", "/tmp/y"), ("//tmp/z", "/tmp/z")]
)
def test_output_paths_are_normalised(given: str, normal: str) -> None:
    spec = parse_spec(mutated(put("nodes", 0, "outputs", 0, "path", value=given)))

    assert spec.node("step1").outputs[0].path == normal


def test_input_reference_properties() -> None:
    param = InputDecl.model_validate({"name": "a", "from": "params.greeting"})
    output = InputDecl(name="b", source="step1.out")
    literal = InputDecl(name="c", value="v")

    assert (param.is_param_ref, param.ref_param, param.ref_node, param.ref_output) == (
        True,
        "greeting",
        None,
        "greeting",
    )
    assert (output.is_param_ref, output.ref_param, output.ref_node, output.ref_output) == (
        False,
        None,
        "step1",
        "out",
    )
    assert (literal.is_param_ref, literal.ref_param, literal.ref_node, literal.ref_output) == (
        False,
        None,
        None,
        None,
    )


# --- the WorkflowSpec API ----------------------------------------------------------------------------------


def test_parents_join_depends_on_and_references_without_duplicates() -> None:
    data = {
        "name": "graph",
        "nodes": [
            {"name": "a", "command": "true", "outputs": [_out("o")]},
            {"name": "b", "command": "true", "outputs": [_out("o")]},
            {
                "name": "c",
                "command": "true",
                "depends_on": ["b"],
                "inputs": [
                    {"name": "x", "from": "a.o"},
                    {"name": "y", "from": "b.o"},
                    {"name": "z", "from": "a.o"},
                ],
            },
        ],
    }

    spec = parse_spec(data)

    assert spec.parents() == {"a": [], "b": [], "c": ["b", "a"]}
    assert spec.topological_order() == ["a", "b", "c"]


def test_node_lookup() -> None:
    spec = parse_spec(seed())

    assert spec.node("step2").name == "step2"
    with pytest.raises(KeyError):
        spec.node("nope")


def test_to_dict_uses_spec_keys_and_leaves_out_defaults() -> None:
    data = {
        "name": "tidy",
        "params": [{"name": "p", "description": ""}],
        "nodes": [
            {
                "name": "a",
                "command": "echo $x",
                "cluster": "local",
                "retries": 0,
                "cache": True,
                "inputs": [{"name": "x", "from": "params.p"}],
            },
            {"name": "b", "command": "true", "retries": 2, "cache": False, "env": {"K": 1}},
        ],
    }

    assert parse_spec(data).to_dict() == {
        "name": "tidy",
        "params": [{"name": "p"}],
        "nodes": [
            {"name": "a", "command": "echo $x", "inputs": [{"name": "x", "from": "params.p"}]},
            {"name": "b", "command": "true", "retries": 2, "env": {"K": "1"}, "cache": False},
        ],
    }


def test_yaml_export_round_trips_with_block_commands(tmp_path: Path) -> None:
    spec = parse_spec(mutated(put("nodes", 1, "command", value="echo $x\ncat $x\n")))

    text = spec.to_yaml()

    assert "  command: |\n    echo $x\n    cat $x\n" in text
    assert "from: step1.output_param1" in text
    assert parse_spec(text) == spec
    (tmp_path / "spec.yaml").write_text(text)
    assert load_spec_file(tmp_path / "spec.yaml") == spec


def test_json_export_round_trips() -> None:
    spec = parse_spec(seed())

    assert parse_spec(json.dumps(spec.to_dict())) == spec
    assert WorkflowSpec.model_validate(spec.to_dict()) == spec


def test_building_a_workflow_spec_directly_applies_the_same_rules() -> None:
    """Hazard: code that builds specs in Python could bypass parse_spec and store a cyclic workflow."""
    with pytest.raises(ValidationError, match=r"nodes\[0\] 'a': cycle: a -> b -> a"):
        WorkflowSpec(
            name="direct",
            nodes=[
                NodeSpec(name="a", command="true", depends_on=["b"]),
                NodeSpec(name="b", command="true", depends_on=["a"]),
            ],
        )


def test_specs_are_immutable() -> None:
    spec = parse_spec(seed())

    with pytest.raises(ValidationError):
        spec.node("step1").retries = 3  # type: ignore[misc]


def test_load_spec_file_names_the_file_for_syntax_errors(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nnodes: [\n")

    with pytest.raises(SpecError) as info:
        load_spec_file(path)

    assert str(info.value).startswith(f"{path}: invalid YAML at line 3, column 1:")


def test_load_spec_file_reads_json_and_passes_known_names(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(mutated(put("nodes", 0, "cluster", value="gpu"))))

    assert load_spec_file(path).node("step1").cluster == "gpu"
    with pytest.raises(SpecError, match="unknown virtual cluster 'gpu'"):
        load_spec_file(path, clusters=["cpu"])


def test_spec_error_lists_issues_one_per_line() -> None:
    error = SpecError([SpecIssue("nodes[0] 'a'", "retries", "x"), SpecIssue("workflow", "name", "y")])

    assert str(error) == "nodes[0] 'a': x\nworkflow: y"
    assert isinstance(error, ValueError)


# --- run params --------------------------------------------------------------------------------------------


def _with_params() -> WorkflowSpec:
    data = seed()
    data["params"] = [
        {"name": "greeting", "default": "hello"},
        {"name": "epochs"},
        {"name": "lr", "default": 0.1},
    ]
    return parse_spec(data)


def test_run_params_apply_defaults_and_become_text() -> None:
    assert validate_run_params(_with_params(), {"epochs": 3, "lr": None}) == {
        "greeting": "hello",
        "epochs": "3",
        "lr": "0.1",
    }


def test_run_params_reject_unknown_and_missing_names_together() -> None:
    with pytest.raises(SpecError) as info:
        validate_run_params(_with_params(), {"greting": "hi", "lr": [1]})

    assert [str(i) for i in info.value.issues] == [
        "param 'epochs': is required but no value was given",
        "param 'lr': must be a string, number or boolean (got a list)",
        "param 'greting': unknown param (this workflow takes: greeting, epochs, lr)",
    ]


def test_run_params_of_a_workflow_without_params() -> None:
    spec = parse_spec({"name": "bare", "nodes": [{"name": "a", "command": "true"}]})

    assert validate_run_params(spec, {}) == {}
    with pytest.raises(SpecError, match=r"param 'x': unknown param \(this workflow takes: no params\)"):
        validate_run_params(spec, {"x": 1})


# --- big specs ---------------------------------------------------------------------------------------------


def _chain(n: int) -> dict[str, Any]:
    nodes = [{"name": "n0", "command": "echo", "outputs": [_out("o")]}]
    nodes += [
        {
            "name": f"n{i}",
            "command": "echo",
            "inputs": [{"name": "x", "from": f"n{i - 1}.o"}],
            "outputs": [_out("o")],
        }
        for i in range(1, n)
    ]
    return {"name": "chain", "nodes": nodes}


def _fan_in(n: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [
        {"name": f"n{i}", "command": "echo", "outputs": [_out("o")]} for i in range(n - 1)
    ]
    inputs = [{"name": f"x{i}", "from": f"n{i}.o"} for i in range(n - 1)]
    nodes.append({"name": "sink", "command": "echo", "inputs": inputs, "depends_on": ["n0"]})
    return {"name": "fan-in", "nodes": nodes}


def test_five_thousand_node_chain_validates_without_recursion() -> None:
    """Hazard: recursive reference or cycle checks overflow the stack on long chains (bench/spec_validate.py times it)."""
    spec = parse_spec(_chain(5_000))

    order = spec.topological_order()
    assert (order[0], order[-1], len(order)) == ("n0", "n4999", 5_000)


def test_five_thousand_node_fan_in_validates() -> None:
    spec = parse_spec(_fan_in(5_000))

    assert spec.parents()["sink"][:2] == ["n0", "n1"]
    assert len(spec.parents()["sink"]) == 4_999


def test_a_cycle_closing_a_five_thousand_node_chain_is_reported() -> None:
    data = _chain(5_000)
    data["nodes"][0]["depends_on"] = ["n4999"]

    issues = issues_of(copy.deepcopy(data))

    assert len(issues) == 1
    assert issues[0].message.startswith("cycle: n0 -> n1 -> n2 -> ")
    assert issues[0].message.endswith(" -> n4999 -> n0")


# --- node positions (ui: {x, y}) ---------------------------------------------------------------------------


def test_node_positions_are_kept_through_export_and_import() -> None:
    data = seed()
    data["nodes"][0]["ui"] = {"x": 40, "y": 16}
    data["nodes"][1]["ui"] = {"x": 40.4, "y": -120}
    spec = parse_spec(data)
    assert spec.node("step1").ui is not None and (spec.node("step1").ui.x, spec.node("step1").ui.y) == (
        40,
        16,
    )
    assert spec.to_dict()["nodes"][1]["ui"] == {"x": 40, "y": -120}  # whole pixels
    again = parse_spec(spec.to_yaml())
    assert again.to_dict() == spec.to_dict()
    assert "ui: {x: 40, y: 16}" in spec.to_yaml() or "ui:\n    x: 40" in spec.to_yaml()


def test_a_spec_without_positions_exports_none() -> None:
    spec = parse_spec(seed())
    assert spec.node("step1").ui is None
    assert "ui" not in spec.to_yaml()


@pytest.mark.parametrize(
    ("ui", "expected"),
    [
        ({"x": "10", "y": 0}, "ui.x: must be a number (got '10')"),
        ({"x": True, "y": 0}, "ui.x: must be a number (got True)"),
        ({"x": 0, "y": float("nan")}, "ui.y: must be a number (got nan)"),
        ({"x": 0, "y": 200_000}, "ui.y: must be at most 100000 (got 200000)"),
        ({"x": -100_001, "y": 0}, "ui.x: must be at least -100000 (got -100001)"),
        ({"x": 0}, "ui.y: is required"),
        ({"x": 0, "y": 0, "z": 1}, "ui.z: unknown field"),
        ([1, 2], "ui: must be a mapping (got a list)"),
    ],
)
def test_node_positions_are_validated(ui: object, expected: str) -> None:
    data = seed()
    data["nodes"][1]["ui"] = ui
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    assert [str(i) for i in caught.value.issues] == [f"nodes[1] 'step2': {expected}"]


def test_nodes_given_the_same_fields_share_one_fields_set_and_copies_do_not_leak() -> None:
    spec = parse_spec(
        {
            "name": "w",
            "nodes": [
                {"name": "a", "command": "true"},
                {"name": "b", "command": "x", "depends_on": ["a"]},
                {"name": "c", "command": "y", "depends_on": ["a"]},
            ],
        }
    )
    a, b, c = spec.nodes
    assert b.model_fields_set is c.model_fields_set  # one set for the usual shape: memory per node
    assert b.model_fields_set == {"name", "command", "depends_on"}
    assert a.model_fields_set == {"name", "command"}

    renamed = b.model_copy(update={"description": "new"})
    assert renamed.model_fields_set == {"name", "command", "depends_on", "description"}
    assert c.model_fields_set == {"name", "command", "depends_on"}  # the shared set did not change
    assert c.model_dump(exclude_unset=True) == {"name": "c", "command": "y", "depends_on": ["a"]}
