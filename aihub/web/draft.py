"""The workflow editor's draft: a spec as the editor form shows it, valid or not.

The editor posts every field on each change; the server turns the fields into a :class:`Draft`, applies the
button that was pressed (add a node, remove an input, ...), validates, and renders the form again. A draft keeps
exactly what the user typed — empty rows, a retry count of ``"abc"`` — so nothing is lost while they fix it;
:meth:`Draft.to_spec` gives the mapping that ``parse_spec`` checks and the services save, and
:func:`draft_from_spec` goes the other way (the YAML tab, copies, templates).

Field names are ``params-<i>-<field>``, ``nodes-<i>-<field>`` and ``nodes-<i>-<list>-<j>-<field>``; the same
strings are the elements' ids, and :func:`field_key` maps a :class:`SpecIssue` to one of them, so an error is
shown next to the field it concerns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aihub.domain import dag
from aihub.domain.messages import msg
from aihub.domain.spec import LOCAL_CLUSTER, SpecIssue

MAX_ROWS = 2000  # per list: far beyond what anybody edits in a form; bounds the work a request can cause

NODE_FIELDS = (
    "name",
    "description",
    "module",
    "image",
    "command",
    "task_type",
    "cluster",
    "sku_count",
    "retries",
    "cache",
    "env",
    "inputs",
    "outputs",
    "storages",
    "depends_on",
    "ui",
)


@dataclass
class ParamRow:
    name: str = ""
    description: str = ""
    default: str = ""
    required: bool = False
    was: str = ""  # the name when the form was rendered: renames are carried to the references


@dataclass
class InputRow:
    name: str = ""
    source: str = ""  # ``params.<p>`` or ``<node>.<output>``; "" means the literal ``value``
    value: str = ""


@dataclass
class OutputRow:
    name: str = ""
    path: str = ""
    type: str = "text"
    description: str = ""
    was: str = ""


@dataclass
class EnvRow:
    key: str = ""
    value: str = ""


@dataclass
class NodeRow:
    name: str = ""
    was: str = ""
    description: str = ""
    module: str = ""
    image: str = ""
    command: str = ""
    task_type: str = "compute"
    cluster: str = LOCAL_CLUSTER
    sku_count: str = "1"
    retries: str = "0"
    cache: bool = True
    env: list[EnvRow] = field(default_factory=list)
    inputs: list[InputRow] = field(default_factory=list)
    outputs: list[OutputRow] = field(default_factory=list)
    storages: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    #: where the canvas drew the node (``ui: {x, y}``), as posted; both empty: not placed
    x: str = ""
    y: str = ""

    def parents(self) -> list[str]:
        referenced = (i.source.partition(".")[0] for i in self.inputs if i.source and "." in i.source)
        return list(dict.fromkeys([*self.depends_on, *(n for n in referenced if n != "params")]))


@dataclass
class Draft:
    name: str = ""
    description: str = ""
    params: list[ParamRow] = field(default_factory=list)
    nodes: list[NodeRow] = field(default_factory=list)

    # ------------------------------------------------------------------------------------------ to a spec

    def to_spec(self) -> dict[str, Any]:
        """The spec mapping of this draft (fields at their defaults left out, as in an exported spec)."""
        spec: dict[str, Any] = {"name": self.name.strip()}
        if self.description:
            spec["description"] = self.description
        if self.params:
            spec["params"] = [_param_spec(p) for p in self.params]
        spec["nodes"] = [_node_spec(n) for n in self.nodes]
        return spec

    def form_issues(self) -> list[SpecIssue]:
        """What the form can express but a spec cannot (env rows without a name, a name set twice)."""
        issues = []
        for i, node in enumerate(self.nodes):
            seen: set[str] = set()
            for j, row in enumerate(node.env):
                key = row.key.strip()
                where = node_location(i, node.name)
                if not key and row.value:
                    issues.append(
                        SpecIssue(
                            where, f"env[{j}]", msg("env[{index}]: a value needs a variable name", index=j)
                        )
                    )
                elif key in seen:
                    issues.append(SpecIssue(where, f"env[{j}]", msg("env {key} is set twice", key=repr(key))))
                seen.add(key)
        return issues

    # ------------------------------------------------------------------------------------------ the graph

    def parents(self) -> dict[str, list[str]]:
        """``node -> parents`` over the nodes with a usable, unique name (for the preview and the selects)."""
        names = [n.name.strip() for n in self.nodes]
        known = {name for name in names if name and names.count(name) == 1}
        return {
            n.name.strip(): [p for p in n.parents() if p in known and p != n.name.strip()]
            for n in self.nodes
            if n.name.strip() in known
        }

    def acyclic_parents(self) -> dict[str, list[str]]:
        """:meth:`parents` with the edges that close cycles dropped, so a broken draft can still be drawn."""
        parents = self.parents()
        for _ in range(len(parents) + 1):
            found = dag.cycles(parents)
            if not found:
                break
            for path in found:
                parents[path[-1]] = [p for p in parents[path[-1]] if p != path[-2]]
        return parents

    def sources(
        self, index: int, outputs_of: Mapping[str, Sequence[str]], *, ancestors_only: bool = False
    ) -> list[str]:
        """What an input of node ``index`` may refer to: the params, then the outputs of every node that is
        not the node itself or one of its descendants (referring to one makes it a parent); with
        ``ancestors_only`` (the canvas), of its ancestors as drawn only.

        ``outputs_of`` gives the outputs of module nodes (by module name).
        """
        node = self.nodes[index]
        name = node.name.strip()
        parents = self.parents()
        below = dag.descendants(parents, name) if name in parents else set()
        above = dag.ancestors(parents, name) if name in parents else set()
        choices = [f"params.{p.name.strip()}" for p in self.params if p.name.strip()]
        for other in self.nodes:
            other_name = other.name.strip()
            if other is node or not other_name or other_name in below:
                continue
            if ancestors_only and other_name not in above:
                continue
            outputs = outputs_of.get(other.module, []) if other.module else [o.name for o in other.outputs]
            choices.extend(f"{other_name}.{o.strip()}" for o in outputs if o.strip())
        return list(dict.fromkeys(choices))

    def dependency_choices(self, index: int) -> list[str]:
        """Nodes node ``index`` may depend on: all others except its descendants."""
        node = self.nodes[index]
        parents = self.parents()
        below = dag.descendants(parents, node.name.strip()) if node.name.strip() in parents else set()
        names = [n.name.strip() for n in self.nodes if n is not node and n.name.strip()]
        return [n for n in dict.fromkeys(names) if n not in below]

    # ------------------------------------------------------------------------------------------ renames

    def carry_renames(self) -> None:
        """A renamed param, node or output keeps its references: ``from`` and ``depends_on`` follow it."""
        params = _renames((p.was, p.name) for p in self.params)
        nodes = _renames((n.was, n.name) for n in self.nodes)
        outputs: dict[str, str] = {}
        for node in self.nodes:
            old_node = node.was.strip() or node.name.strip()
            for old, new in _renames((o.was, o.name) for o in node.outputs).items():
                outputs[f"{old_node}.{old}"] = f"{node.name.strip()}.{new}"
        refs = {f"params.{old}": f"params.{new}" for old, new in params.items()}
        refs.update(outputs)
        for node in self.nodes:
            node.depends_on = [nodes.get(d, d) for d in node.depends_on]
            for row in node.inputs:
                row.source = _rename_ref(row.source, refs, nodes)
        for row in (*self.params, *self.nodes):
            row.was = row.name.strip()
        for node in self.nodes:
            for out in node.outputs:
                out.was = out.name.strip()

    # ------------------------------------------------------------------------------------------ buttons

    def unique_node_name(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_]", "_", base) or "step"
        if base[0].isdigit():
            base = f"n_{base}"
        taken = {n.name.strip() for n in self.nodes}
        if base not in taken:
            return base
        return next(f"{base}{i}" for i in range(2, len(taken) + 3) if f"{base}{i}" not in taken)

    def remove_node(self, index: int) -> dict[str, list[str]]:
        """Removes node ``index`` with its edges and the inputs that took its outputs; returns those inputs'
        names by the node that had them (to flag them there)."""
        removed = self.nodes.pop(index).name.strip()
        dropped: dict[str, list[str]] = {}
        for i, node in enumerate(self.nodes):
            node.depends_on = [d for d in node.depends_on if d != removed]
            if removed:
                dropped |= self.drop_inputs_from(i, removed)
        return dropped

    def drop_inputs_from(self, index: int, parent: str) -> dict[str, list[str]]:
        """Removes node ``index``'s inputs that take an output of ``parent``; ``{node: [their names]}`` when
        there were some."""
        node = self.nodes[index]
        gone = [row for row in node.inputs if row.source.strip().partition(".")[0] == parent]
        if not gone:
            return {}
        node.inputs = [row for row in node.inputs if row not in gone]
        return {node.name.strip(): [row.name.strip() or "?" for row in gone]}


def node_location(index: int, name: str) -> str:
    """The ``location`` a SpecIssue gives node ``index`` (``nodes[2] 'step2'``)."""
    return f"nodes[{index}] '{name.strip()}'" if name.strip() else f"nodes[{index}]"


def _renames(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """old -> new for the rows whose name changed, when the old name is not also in use now."""
    pairs = [(was.strip(), name.strip()) for was, name in pairs]
    current = {name for _, name in pairs}
    return {was: name for was, name in pairs if was and name and was != name and was not in current}


def _rename_ref(source: str, refs: Mapping[str, str], nodes: Mapping[str, str]) -> str:
    if source in refs:
        return refs[source]
    head, dot, tail = source.partition(".")
    return f"{nodes[head]}.{tail}" if dot and head in nodes else source


def _number(text: str) -> int | str:
    text = text.strip()
    return int(text) if re.fullmatch(r"-?\d{1,9}", text) else text


def _param_spec(row: ParamRow) -> dict[str, Any]:
    param: dict[str, Any] = {"name": row.name.strip()}
    if row.description:
        param["description"] = row.description
    if not row.required:
        param["default"] = row.default
    return param


def _input_spec(row: InputRow) -> dict[str, Any]:
    if row.source.strip():
        return {"name": row.name.strip(), "from": row.source.strip()}
    return {"name": row.name.strip(), "value": row.value}


def _output_spec(row: OutputRow) -> dict[str, Any]:
    output = {"name": row.name.strip(), "path": row.path.strip(), "type": row.type}
    if row.description:
        output["description"] = row.description
    return output


def _node_spec(row: NodeRow) -> dict[str, Any]:
    node: dict[str, Any] = {"name": row.name.strip()}
    if row.description:
        node["description"] = row.description
    if row.module.strip():
        node["module"] = row.module.strip()
    if row.image.strip():
        node["image"] = row.image.strip()
    if row.command.strip():
        node["command"] = row.command
    if row.depends_on:
        node["depends_on"] = list(row.depends_on)
    if row.inputs:
        node["inputs"] = [_input_spec(i) for i in row.inputs]
    if row.outputs:
        node["outputs"] = [_output_spec(o) for o in row.outputs]
    if row.task_type != "compute":
        node["task_type"] = row.task_type
    if row.cluster.strip() and row.cluster.strip() != LOCAL_CLUSTER:
        node["cluster"] = row.cluster.strip()
    for key, default in (("sku_count", "1"), ("retries", "0")):
        text = getattr(row, key).strip()
        if text and text != default:
            node[key] = _number(text)
    env = {r.key.strip(): r.value for r in row.env if r.key.strip()}
    if env:
        node["env"] = env
    if row.storages:
        node["storages"] = list(row.storages)
    if not row.cache:
        node["cache"] = False
    if row.x.strip() or row.y.strip():
        node["ui"] = {"x": _coordinate(row.x), "y": _coordinate(row.y)}
    return node


def _coordinate(text: str) -> float | str:
    """A posted coordinate as a number, or as typed (the spec's validation then names the field)."""
    try:
        value = float(text.strip())
    except ValueError:
        return text
    return int(value) if value.is_integer() else value


# ---------------------------------------------------------------------------------------------- from the form


def _tree(items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``nodes-0-inputs-1-name=x`` -> ``{"nodes": {0: {"inputs": {1: {"name": "x"}}}}}``; repeated keys
    (checkbox groups) become lists."""
    root: dict[str, Any] = {}
    for key, value in items:
        parts = key.split("-")
        if parts[0] not in ("params", "nodes"):
            continue
        here: dict[Any, Any] = root
        for depth, part in enumerate(parts[:-1]):
            step: Any = int(part) if depth % 2 == 1 and part.isascii() and part.isdigit() else part
            if isinstance(step, int) and step >= MAX_ROWS:
                break
            here = here.setdefault(step, {})
            if not isinstance(here, dict):
                break
        else:
            leaf = parts[-1]
            if leaf in here:
                existing = here[leaf]
                here[leaf] = [*existing, value] if isinstance(existing, list) else [existing, value]
            else:
                here[leaf] = value
    return root


def _rows(section: Any) -> list[dict[str, Any]]:
    if not isinstance(section, dict):
        return []
    return [
        section[i] for i in sorted(k for k in section if isinstance(k, int)) if isinstance(section[i], dict)
    ]


def _one(data: Mapping[str, Any], key: str, default: str = "") -> str:
    value = data.get(key, default)
    return value[-1] if isinstance(value, list) else str(value)


def _many(data: Mapping[str, Any], key: str) -> list[str]:
    value = data.get(key, [])
    values = value if isinstance(value, list) else [value]
    return [v for v in values if v]


def _flag(data: Mapping[str, Any], key: str, default: bool) -> bool:
    """A checkbox after a hidden field of the same name: ``["0"]`` unticked, ``["0", "1"]`` ticked."""
    if key not in data:
        return default
    return "1" in _many(data, key)


def draft_from_form(items: Iterable[tuple[str, str]]) -> Draft:
    """The draft the editor form posted (its ``multi_items()``)."""
    items = list(items)
    tree = _tree(items)
    top = dict(items)
    params = [
        ParamRow(
            name=_one(p, "name"),
            description=_one(p, "description"),
            default=_one(p, "default"),
            required=_flag(p, "required", False),
            was=_one(p, "was"),
        )
        for p in _rows(tree.get("params"))
    ]
    nodes = [_node_from_form(n) for n in _rows(tree.get("nodes"))]
    return Draft(name=top.get("name", ""), description=top.get("description", ""), params=params, nodes=nodes)


def _node_from_form(data: Mapping[str, Any]) -> NodeRow:
    return NodeRow(
        name=_one(data, "name"),
        was=_one(data, "was"),
        description=_one(data, "description"),
        module=_one(data, "module"),
        image=_one(data, "image"),
        command=_one(data, "command").replace("\r\n", "\n"),
        task_type=_one(data, "task_type", "compute") or "compute",
        cluster=_one(data, "cluster", LOCAL_CLUSTER),
        sku_count=_one(data, "sku_count", "1"),
        retries=_one(data, "retries", "0"),
        cache=_flag(data, "cache", True),
        env=[EnvRow(_one(e, "key"), _one(e, "value")) for e in _rows(data.get("env"))],
        inputs=[
            InputRow(_one(i, "name"), _one(i, "from"), _one(i, "value")) for i in _rows(data.get("inputs"))
        ],
        outputs=[_output_from_form(o) for o in _rows(data.get("outputs"))],
        storages=_many(data, "storages"),
        depends_on=_many(data, "depends_on"),
        x=_one(data, "x"),
        y=_one(data, "y"),
    )


def _output_from_form(data: Mapping[str, Any]) -> OutputRow:
    return OutputRow(
        name=_one(data, "name"),
        path=_one(data, "path"),
        type=_one(data, "type", "text"),
        description=_one(data, "description"),
        was=_one(data, "was"),
    )


# ---------------------------------------------------------------------------------------------- from a spec


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Reader:
    """Reads a spec mapping leniently, noting what the form cannot show (so nothing is silently dropped)."""

    def __init__(self) -> None:
        self.lost: list[str] = []

    def _lose(self, where: str, message: str) -> None:
        self.lost.append(msg("{field}: {message}", field=where, message=message))

    def mapping(self, value: object, where: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self._lose(where, msg("must be a mapping"))
            return {}
        return value

    def items(self, value: object, where: str) -> list[Mapping[str, Any]]:
        if value is None:
            return []
        if not isinstance(value, list):
            self._lose(where, msg("must be a list"))
            return []
        if len(value) > MAX_ROWS:
            self._lose(where, msg("more than {count} entries", count=MAX_ROWS))
            return []
        rows = []
        for index, item in enumerate(value):
            if isinstance(item, Mapping):
                rows.append(item)
            else:
                self._lose(f"{where}[{index}]", msg("must be a mapping"))
        return rows

    def names(self, value: object, where: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self._lose(where, msg("must be a list of names"))
            return []
        return list(value)

    def known(self, data: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
        for key in data:
            if key not in allowed:
                self._lose(where, msg("unknown field {name}", name=repr(key)))


def draft_from_spec(data: Mapping[str, Any]) -> tuple[Draft, list[str]]:
    """The draft of a spec mapping, and what the form could not show (empty when it shows everything)."""
    read = _Reader()
    read.known(data, ("name", "description", "params", "nodes"), "workflow")
    params = []
    for i, p in enumerate(read.items(data.get("params"), "params")):
        read.known(p, ("name", "description", "default"), f"params[{i}]")
        default = p.get("default")
        params.append(
            ParamRow(
                name=_text(p.get("name")),
                description=_text(p.get("description")),
                default=_text(default),
                required=default is None,
                was=_text(p.get("name")),
            )
        )
    nodes = [_node_from_spec(read, i, n) for i, n in enumerate(read.items(data.get("nodes"), "nodes"))]
    draft = Draft(_text(data.get("name")), _text(data.get("description")), params, nodes)
    return draft, read.lost


def _node_from_spec(read: _Reader, index: int, data: Mapping[str, Any]) -> NodeRow:
    where = f"nodes[{index}]"
    read.known(data, NODE_FIELDS, where)
    inputs = []
    for j, i in enumerate(read.items(data.get("inputs"), f"{where}.inputs")):
        read.known(i, ("name", "from", "value"), f"{where}.inputs[{j}]")
        inputs.append(InputRow(_text(i.get("name")), _text(i.get("from")), _text(i.get("value"))))
    outputs = []
    for j, o in enumerate(read.items(data.get("outputs"), f"{where}.outputs")):
        read.known(o, ("name", "path", "type", "description"), f"{where}.outputs[{j}]")
        name = _text(o.get("name"))
        outputs.append(
            OutputRow(
                name, _text(o.get("path")), _text(o.get("type") or "text"), _text(o.get("description")), name
            )
        )
    env = [EnvRow(_text(k), _text(v)) for k, v in read.mapping(data.get("env"), f"{where}.env").items()]
    cache = data.get("cache", True)
    ui = read.mapping(data.get("ui"), f"{where}.ui")
    read.known(ui, ("x", "y"), f"{where}.ui")
    return NodeRow(
        name=_text(data.get("name")),
        was=_text(data.get("name")),
        description=_text(data.get("description")),
        module=_text(data.get("module")),
        image=_text(data.get("image")),
        command=_text(data.get("command")),
        task_type=_text(data.get("task_type") or "compute"),
        cluster=_text(data.get("cluster") or LOCAL_CLUSTER),
        sku_count=_text(data.get("sku_count", 1)),
        retries=_text(data.get("retries", 0)),
        cache=cache is not False,
        env=env,
        inputs=inputs,
        outputs=outputs,
        storages=read.names(data.get("storages"), f"{where}.storages"),
        depends_on=read.names(data.get("depends_on"), f"{where}.depends_on"),
        x=_text(ui.get("x")),
        y=_text(ui.get("y")),
    )


# ---------------------------------------------------------------------------------------------- issues


_SECTION = re.compile(r"(params|nodes)\[(\d+)\]")
_ITEM = re.compile(r"(inputs|outputs|env)\[(\d+)\](?:\.(\w+))?")
_ENV_KEY = re.compile(r"env\.(.+)")
_LIST = re.compile(r"(depends_on|storages)\[\d+\]")
_WORD = re.compile(r"\w+")
_ATTR = {
    "from": "from",
    "value": "from",
    "name": "name",
    "path": "path",
    "type": "type",
    "description": "description",
}


def field_key(issue: SpecIssue, draft: Draft) -> str:
    """The id of the form field an issue concerns: ``name``, ``params-0-default``, ``nodes-1-inputs-0-from``,
    ``nodes-1`` (the node as a whole) or ``spec`` (nothing more specific)."""
    if issue.location == "workflow":
        top = (_WORD.match(issue.field) or _WORD.match("spec"))[0]  # type: ignore[index]
        return top if top in ("name", "description", "params", "nodes", "target") else "spec"
    section = _SECTION.match(issue.location)
    if section is None:
        return "spec"
    kind, index = section[1], int(section[2])
    base = f"{kind}-{index}"
    if kind == "params":
        word = _WORD.match(issue.field)
        return f"{base}-{word[0]}" if word and word[0] in ("name", "description", "default") else base
    return _node_field(base, issue.field, draft.nodes[index] if index < len(draft.nodes) else None)


def _node_field(base: str, name: str, node: NodeRow | None) -> str:
    item = _ITEM.fullmatch(name)
    if item:
        row = f"{base}-{item[1]}-{item[2]}"
        if item[1] == "env":
            return row
        return f"{row}-{_ATTR[item[3]]}" if item[3] in _ATTR else row
    env = _ENV_KEY.fullmatch(name)
    if env:
        keys = [r.key.strip() for r in node.env] if node else []
        return f"{base}-env-{keys.index(env[1])}" if env[1] in keys else f"{base}-env"
    listed = _LIST.fullmatch(name)
    if listed:
        return f"{base}-{listed[1]}"
    word = _WORD.match(name)
    if word and word[0] in NODE_FIELDS:
        return f"{base}-{word[0]}"
    return base


def errors_by_field(issues: Sequence[SpecIssue], draft: Draft) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for issue in issues:
        errors.setdefault(field_key(issue, draft), []).append(issue.message)
    return errors
