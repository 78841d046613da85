"""The editor's canvas: where the nodes of a draft are drawn, and the canvas's actions on the draft.

The canvas is the editor's form drawn differently: every node's fields are in the form (the selected node's as
its side panel, the others as hidden fields) and every action — a node dropped from the palette, a move, a
dependency drawn between two ports, a deletion, "arrange" — is a post that the server applies to the draft,
validates and answers with the editor re-rendered. ``static/canvas.js`` only turns pointer and key gestures into
those posts (the fields ``act``, ``drop-x``/``drop-y`` and each node's ``x``/``y``). So the spec stays the one
source of truth and ``parse_spec`` the one validator.

Positions are the nodes' top-left corners in canvas units, saved with the version as ``ui: {x, y}``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque
from dataclasses import asdict, dataclass

from aihub.domain.messages import msg
from aihub.domain.spec import LOCAL_CLUSTER, UI_MAX
from aihub.web.draft import Draft, NodeRow
from aihub.web.svg import GAP_Y, MARGIN, NODE_W, layout

#: a node on the canvas: wider than tall, two lines (name; kind and cluster)
CANVAS_H = 52
#: the smallest drawing the canvas shows (its viewBox), so that a first node is not drawn huge
MIN_W, MIN_H = 680, 440
#: the largest drawing it shows at first: a big graph opens on its top-left part, readable; "Fit" shows it all
MAX_W, MAX_H = 1600, 1000
#: ``act`` values the canvas posts
_ACT = re.compile(r"(select|move|connect|disconnect)-(\d{1,6})(?:-(\d{1,6}))?")
#: ``$name`` / ``${name}`` in a command
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
#: names a command sets itself: ``name=``, ``for name in``, ``read name``
_ASSIGNED = re.compile(
    r"(?:^|[\s;&|(])(?:([A-Za-z_]\w*)=|for\s+([A-Za-z_]\w*)\s+in\b|read\s+(?:-\w+\s+)*([A-Za-z_]\w*))"
)


@dataclass(frozen=True)
class CanvasNode:
    index: int
    name: str
    module: str
    cluster: str
    x: int
    y: int
    broken: bool
    #: ``$name``s of the command that name no input (flagged on the node while the user types)
    unknown: tuple[str, ...]


@dataclass(frozen=True)
class CanvasEdge:
    parent: int
    child: int
    parent_name: str
    child_name: str
    d: str


@dataclass(frozen=True)
class Canvas:
    nodes: list[CanvasNode]
    edges: list[CanvasEdge]
    view_box: str


# ---------------------------------------------------------------------------------------------- positions


def coordinate(text: str) -> int | None:
    """A posted coordinate as a whole number within the spec's bounds, or None."""
    try:
        value = float(text.strip())
    except ValueError:
        return None
    if value != value or abs(value) > UI_MAX:  # NaN, or out of bounds
        return None
    return round(value)


def position(node: NodeRow) -> tuple[int, int] | None:
    x, y = coordinate(node.x), coordinate(node.y)
    return None if x is None or y is None else (x, y)


def moved_only(draft: Draft, act: str) -> bool:
    """True for ``move-I`` when node I's new place is valid: the canvas already shows it and nothing else changed,
    so the server answers without re-rendering (the next post carries the position)."""
    parsed = parse_act(act)
    if parsed is None or parsed[0] != "move" or parsed[1] >= len(draft.nodes):
        return False
    return position(draft.nodes[parsed[1]]) is not None


def draft_digest(draft: Draft) -> str:
    """What the draft says, apart from where its nodes are drawn: the editor puts it in the page, and a post
    that comes back with the same digest changed nothing the server has not checked already."""
    data = asdict(draft)
    for node in data["nodes"]:
        del node["x"], node["y"]
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("\\r\\n", "\\n")
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def selection_only(draft: Draft, op: str, digest: str) -> tuple[bool, int | None]:
    """(True, the node to show) for ``select-I`` and ``deselect`` (None) when the draft is the one last rendered
    (``digest``): only the side panel changes, so the server answers with it alone (the whole editor of a
    300-node draft is ~640 KB the browser would parse and swap for one click)."""
    if op == "deselect":
        chosen = None
    elif (parsed := parse_act(op)) is not None and parsed[0] == "select" and parsed[1] < len(draft.nodes):
        chosen = parsed[1]
    else:
        return False, None
    return bool(digest) and digest == draft_digest(draft), chosen


def place(node: NodeRow, x: int, y: int) -> None:
    node.x, node.y = str(x), str(y)


def arrange(draft: Draft) -> None:
    """Lays the whole graph out in layers (``svg.layout``); nodes the graph cannot hold (no name, a name twice)
    go in a row below."""
    boxes = layout(draft.acyclic_parents()).boxes
    step_y = CANVAS_H + GAP_Y
    bottom = max((b.y for b in boxes.values()), default=MARGIN - step_y) + step_y
    left = 0
    placed: set[str] = set()
    for node in draft.nodes:
        name = node.name.strip()
        box = boxes.get(name)
        if box is not None and name not in placed:
            placed.add(name)
            row = (box.y - MARGIN) // (40 + GAP_Y)  # svg.layout's rows are NODE_H (40) high
            place(node, box.x, MARGIN + row * step_y)
        else:
            place(node, MARGIN + left * (NODE_W + 24), bottom)
            left += 1


def fill_positions(draft: Draft) -> None:
    """Gives every node without a position one: all laid out when none has one, else in a row below the rest."""
    missing = [n for n in draft.nodes if position(n) is None]
    if not missing:
        return
    if len(missing) == len(draft.nodes):
        arrange(draft)
        return
    placed = [p for n in draft.nodes if (p := position(n)) is not None]
    left = min(x for x, _ in placed)
    bottom = max(y for _, y in placed) + CANVAS_H + GAP_Y
    for i, node in enumerate(missing):
        place(node, left + i * (NODE_W + 24), bottom)


def free_spot(draft: Draft) -> tuple[int, int]:
    """Where a node added without a drop point goes: right of the rightmost node on the top row."""
    placed = [p for n in draft.nodes if (p := position(n)) is not None]
    if not placed:
        return MARGIN, MARGIN
    top = min(y for _, y in placed)
    right = max(x for x, y in placed if y < top + CANVAS_H)
    return right + NODE_W + 24, top


# ---------------------------------------------------------------------------------------------- actions


def parse_act(act: str) -> tuple[str, int, int | None] | None:
    match = _ACT.fullmatch(act)
    if match is None:
        return None
    return match[1], int(match[2]), int(match[3]) if match[3] is not None else None


def connect(draft: Draft, parent: int, child: int) -> str:
    """Makes node ``child`` depend on node ``parent``; the reason when refused (a cycle), else ""."""
    if not (0 <= parent < len(draft.nodes) and 0 <= child < len(draft.nodes)):
        return ""
    source, target = draft.nodes[parent], draft.nodes[child]
    a, b = source.name.strip(), target.name.strip()
    if not a or not b:
        return msg("name both nodes before you connect them")
    if parent == child or a == b:
        return msg("{node} cannot depend on itself", node=a)
    parents = draft.parents()
    if a in parents.get(b, []):
        return ""
    path = _path(parents, a, b)
    if path is not None:
        cycle = " → ".join([*path, b])
        return msg(
            "{parent} → {child} is refused: it would close the cycle {cycle}", parent=a, child=b, cycle=cycle
        )
    target.depends_on.append(a)
    return ""


def disconnect(draft: Draft, parent: int, child: int) -> dict[str, list[str]]:
    """Removes the edge ``parent → child``: the dependency, and the inputs of ``child`` that took an output of
    ``parent`` (returned by node, to flag them in its panel)."""
    if not (0 <= parent < len(draft.nodes) and 0 <= child < len(draft.nodes)):
        return {}
    a = draft.nodes[parent].name.strip()
    target = draft.nodes[child]
    target.depends_on = [d for d in target.depends_on if d != a]
    return draft.drop_inputs_from(child, a) if a else {}


def _path(parents: dict[str, list[str]], start: str, goal: str) -> list[str] | None:
    """The path ``goal → … → start`` along the edges (parent to child), if there is one: then an edge
    ``start → goal`` would close a cycle."""
    children: dict[str, list[str]] = {}
    for child, ps in parents.items():
        for p in ps:
            children.setdefault(p, []).append(child)
    back: dict[str, str | None] = {goal: None}
    queue = deque([goal])
    while queue:
        here = queue.popleft()
        if here == start:
            path = [here]
            while (step := back[path[-1]]) is not None:
                path.append(step)
            return path[::-1]
        for nxt in children.get(here, []):
            if nxt not in back:
                back[nxt] = here
                queue.append(nxt)
    return None


# ---------------------------------------------------------------------------------------------- drawing


def unknown_variables(node: NodeRow) -> tuple[str, ...]:
    """``$name``s in a plain node's command that name no input, no env variable and nothing the command sets
    itself. All-capital names (``$HOME``, ``$AI_HUB_RUN_ID``) are taken to be the environment's."""
    if node.module or not node.command:
        return ()
    known = {i.name.strip() for i in node.inputs} | {e.key.strip() for e in node.env}
    known |= {name for m in _ASSIGNED.finditer(node.command) for name in m.groups() if name}
    found = (m[1] for m in _VARIABLE.finditer(node.command))
    return tuple(dict.fromkeys(n for n in found if n not in known and not n.isupper()))


def edge_path(x1: int, y1: int, x2: int, y2: int) -> str:
    bend = max(40, abs(y2 - y1) // 2)
    return f"M{x1},{y1} C{x1},{y1 + bend} {x2},{y2 - bend} {x2},{y2}"


def draw(draft: Draft, broken: set[str], view_box: str) -> Canvas:
    """The canvas of a draft (every node has a position: ``fill_positions`` first)."""
    nodes = []
    for i, node in enumerate(draft.nodes):
        x, y = position(node) or (MARGIN, MARGIN)
        nodes.append(
            CanvasNode(
                i,
                node.name.strip(),
                node.module.strip(),
                node.cluster.strip() or LOCAL_CLUSTER,
                x,
                y,
                node.name.strip() in broken,
                unknown_variables(node),
            )
        )
    index = {}
    for n in nodes:
        index.setdefault(n.name, n)
    edges = []
    for child, ps in draft.parents().items():
        for p in ps:
            a, b = index[p], index[child]
            d = edge_path(a.x + NODE_W // 2, a.y + CANVAS_H, b.x + NODE_W // 2, b.y)
            edges.append(CanvasEdge(a.index, b.index, a.name, b.name, d))
    return Canvas(nodes, edges, view_box if _VIEW_BOX.fullmatch(view_box) else _fit(nodes))


_VIEW_BOX = re.compile(r"-?\d{1,6}(\.\d{1,3})? -?\d{1,6}(\.\d{1,3})? \d{1,6}(\.\d{1,3})? \d{1,6}(\.\d{1,3})?")


def _fit(nodes: list[CanvasNode]) -> str:
    if not nodes:
        return f"0 0 {MIN_W} {MIN_H}"
    left = min(n.x for n in nodes) - MARGIN
    top = min(n.y for n in nodes) - MARGIN
    width = min(max(max(n.x for n in nodes) + NODE_W + MARGIN - left, MIN_W), MAX_W)
    height = min(max(max(n.y for n in nodes) + CANVAS_H + MARGIN - top, MIN_H), MAX_H)
    return f"{left} {top} {width} {height}"
