"""The drawn graph of a workflow version, cached: a version's spec never changes, and parsing a 2,000-node
spec (validation included) costs far more than drawing it. Keyed by the spec's digest, not the version id, so
that a cache entry can never outlive the spec it was made from."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aihub.domain import dag
from aihub.domain.spec import parse_spec
from aihub.web.svg import Layout, overview

CACHE_SIZE = 32


@dataclass(frozen=True)
class VersionGraph:
    spec: Any  # the parsed ``WorkflowSpec``
    yaml: str
    parents: Mapping[str, Sequence[str]]
    order: tuple[str, ...]
    layout: Layout
    #: the order of the table of nodes and of the keyboard: by layer, then by name
    table_order: tuple[str, ...] = ()


def positions(spec: Any) -> dict[str, tuple[int, int]]:
    """Where the canvas put each node (``ui: {x, y}``) of a parsed spec; the nodes without one left out."""
    return {n.name: (n.ui.x, n.ui.y) for n in spec.nodes if n.ui is not None}


_cache: OrderedDict[str, VersionGraph] = OrderedDict()


def version_graph(spec: Mapping[str, Any]) -> VersionGraph:
    key = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()
    hit = _cache.get(key)
    if hit is not None:
        _cache.move_to_end(key)
        return hit
    parsed = parse_spec(spec)
    parents = parsed.parents()
    graph = VersionGraph(
        parsed,
        parsed.to_yaml(),
        parents,
        tuple(dag.topological_order(parents)),
        overview(parents, positions(parsed)),
        tuple(name for layer in dag.layers(parents) for name in sorted(layer)),
    )
    _cache[key] = graph
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return graph
