"""The DAG drawn on the server as SVG: a layered layout (``aihub.domain.dag.layers``), one group per node.

Each node is a nested ``<svg id="node-NAME">`` so that a live update can replace exactly that element (an HTML
fragment parser only creates SVG elements inside an ``<svg>``). Wide layers wrap into several rows and very
large graphs drop their edges, so a 2,000-node run still draws and stays responsive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aihub.domain import dag
from aihub.domain.status import NODE_COLOURS, NodeStatus

NODE_W, NODE_H = 170, 40
GAP_X, GAP_Y, MARGIN = 24, 56, 16
MAX_PER_ROW = 30
MAX_EDGES = 3000


@dataclass(frozen=True)
class Box:
    name: str
    x: int
    y: int


@dataclass(frozen=True)
class Layout:
    boxes: dict[str, Box]
    edges: list[tuple[Box, Box]]
    width: int
    height: int


def layout(parents: Mapping[str, Sequence[str]]) -> Layout:
    rows: list[list[str]] = []
    for layer in dag.layers(parents):
        rows.extend(layer[i : i + MAX_PER_ROW] for i in range(0, len(layer), MAX_PER_ROW))
    widest = max((len(r) for r in rows), default=1)
    width = MARGIN * 2 + widest * NODE_W + (widest - 1) * GAP_X
    boxes: dict[str, Box] = {}
    for r, row in enumerate(rows):
        row_w = len(row) * NODE_W + (len(row) - 1) * GAP_X
        x0 = (width - row_w) // 2
        for i, name in enumerate(row):
            boxes[name] = Box(name, x0 + i * (NODE_W + GAP_X), MARGIN + r * (NODE_H + GAP_Y))
    edges = [(boxes[p], boxes[c]) for c, ps in parents.items() for p in ps if p in boxes and c in boxes]
    if len(edges) > MAX_EDGES:
        edges = []
    height = MARGIN * 2 + len(rows) * NODE_H + max(len(rows) - 1, 0) * GAP_Y
    return Layout(boxes, edges, width, max(height, NODE_H + 2 * MARGIN))


def edge_path(a: Box, b: Box) -> str:
    x1, y1 = a.x + NODE_W // 2, a.y + NODE_H
    x2, y2 = b.x + NODE_W // 2, b.y
    mid = (y1 + y2) // 2
    return f"M{x1},{y1} C{x1},{mid} {x2},{mid} {x2},{y2}"


def colour(status: NodeStatus | str | None) -> str:
    return NODE_COLOURS.get(NodeStatus(status or NodeStatus.WAITING), NODE_COLOURS[NodeStatus.WAITING])


def label(name: str, retry_count: int = 0) -> str:
    """The seed's label: the retry count in brackets after the name, e.g. ``train (2)``."""
    return f"{name} ({retry_count})" if retry_count else name
