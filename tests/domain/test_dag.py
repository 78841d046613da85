"""DAG algorithms: stable order, cycle paths, reachability, layering, and no recursion on huge graphs."""

from __future__ import annotations

import pytest

from aihub.domain.dag import (
    CycleError,
    ancestors,
    children_of,
    cycles,
    descendants,
    layers,
    topological_order,
)

DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


def test_topological_order_puts_parents_first_and_keeps_declaration_order() -> None:
    parents = {"late": ["root"], "root": [], "other": [], "child": ["other", "root"]}

    assert topological_order(parents) == ["root", "late", "other", "child"]


def test_topological_order_of_independent_nodes_is_declaration_order() -> None:
    assert topological_order({"z": [], "y": [], "x": []}) == ["z", "y", "x"]


def test_topological_order_counts_duplicate_parents_once() -> None:
    assert topological_order({"a": [], "b": ["a", "a"]}) == ["a", "b"]


def test_undeclared_parents_become_implicit_roots() -> None:
    assert topological_order({"b": ["x"], "a": []}) == ["a", "x", "b"]
    assert children_of({"b": ["x"]}) == {"b": [], "x": ["b"]}


@pytest.mark.parametrize(
    ("parents", "message"),
    [
        ({"a": ["c"], "b": ["a"], "c": ["b"]}, "cycle: a -> b -> c -> a"),
        ({"x": [], "b": ["a"], "a": ["b"]}, "cycle: b -> a -> b"),
        ({"a": ["a"]}, "cycle: a -> a"),
        ({"ok": [], "a": ["ok", "c"], "b": ["a"], "c": ["b"], "after": ["c"]}, "cycle: a -> b -> c -> a"),
    ],
)
def test_cycle_error_shows_the_cycle_path(parents: dict[str, list[str]], message: str) -> None:
    with pytest.raises(CycleError) as info:
        topological_order(parents)

    assert str(info.value) == message
    assert info.value.path == message.removeprefix("cycle: ").split(" -> ")


def test_cycles_reports_one_cycle_per_strongly_connected_component() -> None:
    parents = {"p": ["q"], "q": ["p"], "free": [], "a": ["c"], "b": ["a"], "c": ["b", "free"], "s": ["s"]}

    assert cycles(parents) == [["p", "q", "p"], ["a", "b", "c", "a"], ["s", "s"]]
    assert cycles(DIAMOND) == []


def test_cycles_gives_a_shortest_cycle_through_the_first_node_of_a_dense_component() -> None:
    parents = {"a": ["d"], "b": ["a"], "c": ["b"], "d": ["c", "a"]}

    assert cycles(parents) == [["a", "d", "a"]]


def test_children_of_lists_every_node_with_children_in_declaration_order() -> None:
    assert children_of(DIAMOND) == {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}


def test_descendants_and_ancestors_exclude_the_start_node() -> None:
    assert descendants(DIAMOND, "a") == {"b", "c", "d"}
    assert descendants(DIAMOND, "b") == {"d"}
    assert descendants(DIAMOND, "d") == set()
    assert ancestors(DIAMOND, "d") == {"a", "b", "c"}
    assert ancestors(DIAMOND, "a") == set()


def test_layers_use_the_longest_path_from_a_root() -> None:
    parents = {"a": [], "b": ["a"], "c": ["b"], "d": ["a", "c"], "e": []}

    assert layers(parents) == [["a", "e"], ["b"], ["c"], ["d"]]


def test_layers_reject_cycles() -> None:
    with pytest.raises(CycleError):
        layers({"a": ["b"], "b": ["a"]})


def test_empty_graph() -> None:
    assert topological_order({}) == []
    assert layers({}) == []
    assert cycles({}) == []


def test_long_chain_is_handled_without_recursion() -> None:
    """Hazard: a recursive walk overflows Python's stack on long chains (the default limit is 1000 frames)."""
    n = 50_000
    parents = {f"n{i}": [f"n{i - 1}"] if i else [] for i in range(n)}

    assert topological_order(parents)[-1] == f"n{n - 1}"
    assert len(descendants(parents, "n0")) == n - 1
    assert len(ancestors(parents, f"n{n - 1}")) == n - 1
    assert len(layers(parents)) == n
    assert cycles(parents) == []


def test_long_cycle_is_found_without_recursion() -> None:
    n = 20_000
    parents = {f"n{i}": [f"n{(i - 1) % n}"] for i in range(n)}

    with pytest.raises(CycleError) as info:
        topological_order(parents)

    assert info.value.path == [f"n{i}" for i in range(n)] + ["n0"]


def test_wide_fan_in_and_fan_out() -> None:
    n = 10_000
    parents: dict[str, list[str]] = {"root": []}
    parents |= {f"w{i}": ["root"] for i in range(n)}
    parents["sink"] = [f"w{i}" for i in range(n)]

    assert layers(parents) == [["root"], [f"w{i}" for i in range(n)], ["sink"]]
    assert len(ancestors(parents, "sink")) == n + 1
