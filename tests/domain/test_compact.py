"""The engine's compact form of a run's spec: shared empty containers that refuse changes, one object per
equal string, and nothing else different (aihub.domain.compact)."""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable
from typing import Any

import pytest

from aihub.domain.compact import EMPTY_DICT, EMPTY_LIST, compact_spec, shared_empty
from aihub.domain.spec import parse_spec

SPEC = {
    "name": "compact-demo",
    "nodes": [
        {
            "name": "prepare",
            "command": "echo hi > /tmp/o.txt",
            "outputs": [{"name": "o", "path": "/tmp/o.txt", "type": "text"}],
        },
        {"name": "train", "command": "true", "depends_on": ["prepare"], "env": {"EPOCHS": "3"}},
        {"name": "score", "command": "true", "depends_on": ["train"], "storages": ["models"]},
        {"name": "report", "command": "true", "inputs": [{"name": "o", "from": "prepare.o"}]},
    ],
}


def test_a_compact_spec_is_the_same_spec() -> None:
    before = parse_spec(json.dumps(SPEC))
    after = compact_spec(parse_spec(json.dumps(SPEC)), {})
    assert after.to_dict() == before.to_dict()
    assert after.model_dump_json() == before.model_dump_json()
    assert after.parents() == before.parents()
    assert after.topological_order() == before.topological_order()
    assert after == before


def test_empty_containers_are_shared_and_full_ones_are_kept() -> None:
    spec = compact_spec(parse_spec(json.dumps(SPEC)), {})
    prepare, train, score, report = spec.nodes
    assert prepare.depends_on is EMPTY_LIST and report.depends_on is EMPTY_LIST
    assert prepare.env is EMPTY_DICT and score.env is EMPTY_DICT
    assert train.inputs is score.inputs is EMPTY_LIST
    assert train.env == {"EPOCHS": "3"} and train.env is not EMPTY_DICT
    assert [o.name for o in prepare.outputs] == ["o"]
    assert score.storages == ["models"]


def test_equal_strings_become_one_object() -> None:
    names: dict[str, str] = {}
    # each from its own JSON text: equal strings are different objects to begin with
    spec = compact_spec(parse_spec(json.dumps(SPEC)), names)
    prepare, train, score, report = spec.nodes
    assert train.depends_on[0] is prepare.name
    assert score.depends_on[0] is train.name
    assert train.command is score.command is report.command
    assert names["train"] is train.name  # given on, for the node rows' names
    other = compact_spec(parse_spec(json.dumps(SPEC)), names)
    assert other.nodes[1].name is train.name


MUTATIONS: list[tuple[str, Callable[[Any], object]]] = [
    ("append", lambda c: c.append(1)),
    ("extend", lambda c: c.extend([1])),
    ("insert", lambda c: c.insert(0, 1)),
    ("setitem", lambda c: c.__setitem__(slice(None), [1])),
    ("iadd", lambda c: c.__iadd__([1])),
    ("sort", lambda c: c.sort()),
]
DICT_MUTATIONS: list[tuple[str, Callable[[Any], object]]] = [
    ("setitem", lambda d: d.__setitem__("k", "v")),
    ("update", lambda d: d.update(k="v")),
    ("setdefault", lambda d: d.setdefault("k", "v")),
    ("ior", lambda d: d.__ior__({"k": "v"})),
]


@pytest.mark.parametrize(("what", "change"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_the_shared_empty_list_refuses_changes(what: str, change: Callable[[Any], object]) -> None:
    spec = compact_spec(parse_spec(json.dumps(SPEC)), {})
    with pytest.raises(TypeError, match="shared empty list cannot be changed"):
        change(spec.nodes[0].depends_on)
    assert EMPTY_LIST == [] and spec.nodes[3].depends_on == []  # every other node's is still empty


@pytest.mark.parametrize(("what", "change"), DICT_MUTATIONS, ids=[m[0] for m in DICT_MUTATIONS])
def test_the_shared_empty_dict_refuses_changes(what: str, change: Callable[[Any], object]) -> None:
    with pytest.raises(TypeError, match="shared empty dict cannot be changed"):
        change(EMPTY_DICT)
    assert EMPTY_DICT == {}


def test_copies_of_the_shared_empties_are_plain_and_may_change() -> None:
    spec = compact_spec(parse_spec(json.dumps(SPEC)), {})
    for copied in (copy.copy(EMPTY_LIST), copy.deepcopy(EMPTY_LIST), list(EMPTY_LIST)):
        assert type(copied) is list
        copied.append(1)
    for copied_dict in (copy.copy(EMPTY_DICT), copy.deepcopy(EMPTY_DICT), {**EMPTY_DICT}):
        assert type(copied_dict) is dict
        copied_dict["k"] = "v"
    deep = spec.model_copy(deep=True)
    assert deep == spec
    assert type(deep.nodes[0].depends_on) is list
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_shared_empty_keeps_what_is_not_an_empty_list_or_dict() -> None:
    full, text = ["a"], ""
    assert shared_empty(full) is full
    assert shared_empty(text) is text
    assert shared_empty(()) == ()
    assert shared_empty([]) is EMPTY_LIST and shared_empty({}) is EMPTY_DICT
