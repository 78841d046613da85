"""The DAG drawn on the server as SVG: a layered layout (``aihub.domain.dag.layers``), one group per node.

Each node is a nested ``<svg id="node-NAME">`` so that a live update can replace exactly that element (an HTML
fragment parser only creates SVG elements inside an ``<svg>``). Wide layers wrap into several rows.

Large graphs (more than ``FULL_MAX`` nodes) are drawn by ``overview``: a layer of more than ``LAYER_MAX`` nodes
becomes one summary box (``<svg id="group-N">``: its node count and a bar of their statuses) that expands into a
list of its nodes on click; when there are more than ``MAX_ROWS`` layers, consecutive layers share a box; edges
are drawn once per pair of boxes. A 2,000-node run page thus draws a few dozen elements, not thousands, and every
node is still one click away.

Keyboard: every drawn unit (a node's box or a summary box) is a focusable ``role="button"``, put in the document
in ``Layout.order`` (topological by layers, then by name), so Tab visits them in that order; ``Layout.nav`` gives
each unit its neighbours along the edges (up: first parent, down: first child) and in its row (left, right),
which ``static/app.js`` follows on the arrow keys.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aihub.domain import dag
from aihub.domain.messages import msg
from aihub.domain.status import NODE_COLOURS, NodeStatus

NODE_W, NODE_H = 170, 40
GAP_X, GAP_Y, MARGIN = 24, 56, 16
MAX_PER_ROW = 30
MAX_EDGES = 3000
#: graphs up to this many nodes are drawn node by node; larger ones collapse wide layers (``overview``)
FULL_MAX = 300
#: in a large graph, a layer of more nodes than this is drawn as one summary box
LAYER_MAX = 10
#: in a large graph, at most this many rows: consecutive layers share a box beyond it
MAX_ROWS = 40


@dataclass(frozen=True)
class Box:
    name: str
    x: int
    y: int


@dataclass(frozen=True)
class Group:
    """A summary box standing for several nodes (a wide layer, or a band of consecutive layers)."""

    index: int
    title: str
    names: tuple[str, ...]
    box: Box


@dataclass(frozen=True)
class Layout:
    boxes: dict[str, Box]
    edges: list[tuple[Box, Box]]
    width: int
    height: int
    groups: tuple[Group, ...] = ()
    #: the group of every node drawn inside a summary box
    group_of: dict[str, int] = field(default_factory=dict)
    #: element ids of the drawn units (``node-NAME``, ``group-N``) in keyboard order: layers, then by name
    order: tuple[str, ...] = ()
    #: per element id, the element ids the arrow keys move to: ``up``, ``down``, ``left``, ``right``
    nav: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def collapsed(self) -> bool:
        return bool(self.groups)


def layout(
    parents: Mapping[str, Sequence[str]], positions: Mapping[str, tuple[int, int]] | None = None
) -> Layout:
    """The layered layout; or, when ``positions`` places every node (the spec's ``ui: {x, y}``), the nodes
    where the user put them (moved together so that the top-left one is at the margin)."""
    rows: list[list[str]] = []
    for layer in dag.layers(parents):
        layer = sorted(layer)  # left to right as the keyboard goes: by name
        rows.extend(layer[i : i + MAX_PER_ROW] for i in range(0, len(layer), MAX_PER_ROW))
    widest = max((len(r) for r in rows), default=1)
    width = MARGIN * 2 + widest * NODE_W + (widest - 1) * GAP_X
    boxes: dict[str, Box] = {}
    for r, row in enumerate(rows):
        row_w = len(row) * NODE_W + (len(row) - 1) * GAP_X
        x0 = (width - row_w) // 2
        for i, name in enumerate(row):
            boxes[name] = Box(name, x0 + i * (NODE_W + GAP_X), MARGIN + r * (NODE_H + GAP_Y))
    height = MARGIN * 2 + len(rows) * NODE_H + max(len(rows) - 1, 0) * GAP_Y
    if positions and boxes and all(name in positions for name in boxes):
        boxes, width, height = placed(boxes, positions)
    edges = [(boxes[p], boxes[c]) for c, ps in parents.items() for p in ps if p in boxes and c in boxes]
    if len(edges) > MAX_EDGES:
        edges = []
    unit = {name: f"node-{name}" for name in boxes}
    order, nav = keyboard(parents, unit, [[f"node-{n}" for n in row] for row in rows])
    return Layout(boxes, edges, width, max(height, NODE_H + 2 * MARGIN), order=order, nav=nav)


def placed(
    boxes: Mapping[str, Box], positions: Mapping[str, tuple[int, int]]
) -> tuple[dict[str, Box], int, int]:
    """The boxes at their saved positions, shifted so that the drawing starts at the margin; its size."""
    left = min(positions[name][0] for name in boxes)
    top = min(positions[name][1] for name in boxes)
    moved = {
        name: Box(name, positions[name][0] - left + MARGIN, positions[name][1] - top + MARGIN)
        for name in boxes
    }
    width = max(b.x for b in moved.values()) + NODE_W + MARGIN
    height = max(b.y for b in moved.values()) + NODE_H + MARGIN
    return moved, width, height


def overview(
    parents: Mapping[str, Sequence[str]], positions: Mapping[str, tuple[int, int]] | None = None
) -> Layout:
    """The layout of the run and version pages: ``layout`` up to ``FULL_MAX`` nodes, else wide layers (and
    bands of layers beyond ``MAX_ROWS``) collapsed into summary boxes, one edge per pair of boxes."""
    if len(parents) <= FULL_MAX:
        return layout(parents, positions)
    layers = dag.layers(parents)
    per_band = -(-len(layers) // MAX_ROWS)
    rows: list[
        list[str]
    ] = []  # each row: node names drawn one by one, or one group key "#N" (never a node name)
    members: list[tuple[str, tuple[str, ...]]] = []
    for start in range(0, len(layers), per_band):
        band = layers[start : start + per_band]
        if len(band) == 1 and len(band[0]) <= LAYER_MAX:
            rows.append(sorted(band[0]))
            continue
        names = tuple(n for layer in band for n in layer)
        last = start + len(band)
        first = start + 1
        title = (
            msg("layer {first}", first=first)
            if len(band) == 1
            else msg("layers {first}-{last}", first=first, last=last)
        )
        rows.append([f"#{len(members)}"])
        members.append((title, names))
    widest = max((len(r) for r in rows), default=1)
    width = MARGIN * 2 + widest * NODE_W + (widest - 1) * GAP_X
    boxes: dict[str, Box] = {}
    groups: list[Group] = []
    group_of: dict[str, int] = {}
    unit: dict[str, Box] = {}
    for r, row in enumerate(rows):
        row_w = len(row) * NODE_W + (len(row) - 1) * GAP_X
        x0 = (width - row_w) // 2
        for i, key in enumerate(row):
            box = Box(key, x0 + i * (NODE_W + GAP_X), MARGIN + r * (NODE_H + GAP_Y))
            if key.startswith("#"):
                index = int(key[1:])
                title, names = members[index]
                groups.append(Group(index, title, names, box))
                for name in names:
                    group_of[name] = index
                    unit[name] = box
            else:
                boxes[key] = box
                unit[key] = box
    seen: set[tuple[int, int, int, int]] = set()
    edges: list[tuple[Box, Box]] = []
    for child, ps in parents.items():
        for p in ps:
            a, b = unit.get(p), unit.get(child)
            if a is None or b is None or a is b:
                continue
            key = (a.x, a.y, b.x, b.y)
            if key not in seen and len(edges) < MAX_EDGES:
                seen.add(key)
                edges.append((a, b))
    height = MARGIN * 2 + len(rows) * NODE_H + max(len(rows) - 1, 0) * GAP_Y
    ids = {name: f"group-{group_of[name]}" if name in group_of else f"node-{name}" for name in unit}
    row_ids = [[f"group-{k[1:]}" if k.startswith("#") else f"node-{k}" for k in row] for row in rows]
    order, nav = keyboard(parents, ids, row_ids)
    return Layout(boxes, edges, width, max(height, NODE_H + 2 * MARGIN), tuple(groups), group_of, order, nav)


def keyboard(
    parents: Mapping[str, Sequence[str]], unit: Mapping[str, str], rows: Sequence[Sequence[str]]
) -> tuple[tuple[str, ...], dict[str, dict[str, str]]]:
    """The keyboard order of the drawn units and where each arrow key goes from each of them.

    ``unit`` maps every node name to the element id that draws it (its own box or its summary box); ``rows``
    are the drawn rows (element ids). Order: by layer, then by name (a summary box sorts by its first node)."""
    rank: dict[str, tuple[int, str]] = {}
    for depth, layer in enumerate(dag.layers(parents)):
        for name in layer:
            uid = unit[name]
            rank[uid] = min(rank.get(uid, (depth, name)), (depth, name))
    order = tuple(sorted(rank, key=lambda uid: rank[uid]))
    ups: dict[str, set[str]] = {uid: set() for uid in order}
    downs: dict[str, set[str]] = {uid: set() for uid in order}
    for child, ps in parents.items():
        for p in ps:
            a, b = unit.get(p), unit.get(child)
            if a and b and a != b:
                downs[a].add(b)
                ups[b].add(a)
    nav: dict[str, dict[str, str]] = {uid: {} for uid in order}
    for uid in order:
        if ups[uid]:
            nav[uid]["up"] = min(ups[uid], key=lambda u: rank[u])
        if downs[uid]:
            nav[uid]["down"] = min(downs[uid], key=lambda u: rank[u])
    for row in rows:
        ranked = sorted(row, key=lambda u: rank[u])
        for left, right in itertools.pairwise(ranked):
            nav[left]["right"] = right
            nav[right]["left"] = left
    return order, nav


def status_counts(names: Sequence[str], statuses: Mapping[str, str]) -> dict[str, int]:
    """How many of ``names`` are in each status (``WAITING`` when unknown)."""
    counts: dict[str, int] = {}
    for name in names:
        status = statuses.get(name) or NodeStatus.WAITING.value
        counts[status] = counts.get(status, 0) + 1
    return counts


def status_bar(counts: Mapping[str, int], width: int) -> list[tuple[int, int, str, str, int]]:
    """Segments (x, w, colour, status, count) of a bar ``width`` wide, proportional to ``counts``."""
    total = sum(counts.values()) or 1
    segments, x = [], 0
    items = sorted(counts.items(), key=lambda kv: kv[0] == NodeStatus.WAITING.value)
    for i, (status, count) in enumerate(items):
        w = width - x if i == len(items) - 1 else round(width * count / total)
        segments.append((x, w, colour(status), status, count))
        x += w
    return segments


def edge_path(a: Box, b: Box) -> str:
    x1, y1 = a.x + NODE_W // 2, a.y + NODE_H
    x2, y2 = b.x + NODE_W // 2, b.y
    mid = (y1 + y2) // 2
    return f"M{x1},{y1} C{x1},{mid} {x2},{mid} {x2},{y2}"


def colour(status: NodeStatus | str | None) -> str:
    return NODE_COLOURS.get(NodeStatus(status or NodeStatus.WAITING), NODE_COLOURS[NodeStatus.WAITING])


#: the glyph drawn with each status, so that no status is told by its colour alone (nodes, chips, badges)
STATUS_ICONS: dict[str, str] = {
    "WAITING": "\u25cb",  # ○
    "PENDING": "\u25cb",
    "RUNNING": "\u25b8",  # ▸
    "STOPPING": "\u25a0",  # ■
    "SUCCEEDED": "\u2713",  # ✓
    "FAILED": "\u2715",  # ✕
    "STOPPED": "\u25a0",
    "SKIPPED": "\u00bb",  # »
}


def icon(status: NodeStatus | str | None) -> str:
    return STATUS_ICONS.get(str(getattr(status, "value", status) or "WAITING"), "")


def label(name: str, retry_count: int = 0) -> str:
    """The seed's label: the retry count in brackets after the name, e.g. ``train (2)``."""
    return f"{name} ({retry_count})" if retry_count else name
