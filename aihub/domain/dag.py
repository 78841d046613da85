"""Directed acyclic graphs of workflow nodes.

A workflow is a DAG given as ``node -> parents`` (the nodes it waits for), in declaration order. Everything here
is pure and iterative: graphs of many thousands of nodes (long chains included) never hit Python's recursion
limit, and every function runs in (near) linear time.

A parent that is not itself a key of the mapping is treated as an implicit node without parents, placed after
the declared nodes in order of first mention (as ``graphlib`` does). Duplicate parents count once. Orders are
stable: whenever several nodes could come next, the one declared first does.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "CycleError",
    "ancestors",
    "children_of",
    "cycles",
    "descendants",
    "layers",
    "topological_order",
]

Parents = Mapping[str, Sequence[str]]


class CycleError(ValueError):
    """The graph has a cycle; ``path`` lists it in data-flow order and ends where it starts."""

    def __init__(self, path: list[str]) -> None:
        self.path = path
        super().__init__(f"cycle: {' -> '.join(path)}")


def _normalise(parents: Parents) -> dict[str, list[str]]:
    """Every node (implicit ones included) with its de-duplicated parents, in declaration order."""
    graph: dict[str, list[str]] = {node: list(dict.fromkeys(ps)) for node, ps in parents.items()}
    for ps in list(graph.values()):
        for parent in ps:
            graph.setdefault(parent, [])
    return graph


def _children(graph: Mapping[str, list[str]]) -> dict[str, list[str]]:
    children: dict[str, list[str]] = {node: [] for node in graph}
    for node, ps in graph.items():
        for parent in ps:
            children[parent].append(node)
    return children


def children_of(parents: Parents) -> dict[str, list[str]]:
    """``node -> children`` for every node (leaves map to ``[]``); children in declaration order."""
    return _children(_normalise(parents))


def _kahn(graph: Mapping[str, list[str]]) -> list[str]:
    """Topological order of as many nodes as possible; nodes on or behind a cycle are left out."""
    index = {node: i for i, node in enumerate(graph)}
    children = _children(graph)
    waiting = {node: len(ps) for node, ps in graph.items()}
    ready = [index[node] for node, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    names = list(graph)
    order: list[str] = []
    while ready:
        node = names[heapq.heappop(ready)]
        order.append(node)
        for child in children[node]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, index[child])
    return order


def topological_order(parents: Parents) -> list[str]:
    """Parents before children; among nodes that are ready together, declaration order wins.

    Raises :class:`CycleError` naming one cycle when there is any.
    """
    graph = _normalise(parents)
    order = _kahn(graph)
    if len(order) < len(graph):
        raise CycleError(cycles(graph)[0])
    return order


def _walk(start: str, edges: Mapping[str, Sequence[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(edges.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(edges.get(node, ()))
    seen.discard(start)
    return seen


def descendants(parents: Parents, start: str) -> set[str]:
    """Every node that (transitively) depends on ``start``, without ``start`` itself."""
    return _walk(start, children_of(parents))


def ancestors(parents: Parents, start: str) -> set[str]:
    """Every node ``start`` (transitively) depends on, without ``start`` itself."""
    return _walk(start, _normalise(parents))


def layers(parents: Parents) -> list[list[str]]:
    """Longest-path layering: a node sits one layer below its deepest parent (roots in layer 0).

    Within a layer nodes keep topological (so, where possible, declaration) order. Used to draw the DAG.
    Raises :class:`CycleError` when there is a cycle.
    """
    graph = _normalise(parents)
    depth: dict[str, int] = {}
    result: list[list[str]] = []
    for node in topological_order(graph):
        level = max((depth[p] + 1 for p in graph[node]), default=0)
        depth[node] = level
        if level == len(result):
            result.append([])
        result[level].append(node)
    return result


def _strongly_connected(graph: Mapping[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm with an explicit stack; components in order of discovery."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, pending = work[-1]
            for nxt in pending:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(component)
    return components


def _shortest_cycle_through(start: str, members: set[str], children: Mapping[str, list[str]]) -> list[str]:
    """Breadth-first search from ``start`` back to itself along child edges inside one component."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in children[node]:
            if child == start:
                path = [start]
                while node != start:
                    path.append(node)
                    node = came_from[node]
                path.append(start)
                path[1:-1] = reversed(path[1:-1])
                return path
            if child in members and child not in came_from:
                came_from[child] = node
                queue.append(child)
    raise AssertionError(f"{start!r} is not on a cycle")  # pragma: no cover - callers pass cycle members


def cycles(parents: Parents) -> list[list[str]]:
    """One cycle per strongly connected component that has one, e.g. ``["a", "b", "c", "a"]``.

    Each cycle starts at its earliest-declared node and follows data flow (parent -> child). Components come in
    declaration order of those start nodes. An acyclic graph gives ``[]``.
    """
    graph = _normalise(parents)
    position = {node: i for i, node in enumerate(graph)}
    children = _children(graph)
    found: list[list[str]] = []
    for component in _strongly_connected(graph):
        members = set(component)
        start = min(component, key=position.__getitem__)
        if len(component) > 1 or start in graph[start]:
            found.append(_shortest_cycle_through(start, members, children))
    found.sort(key=lambda path: position[path[0]])
    return found
