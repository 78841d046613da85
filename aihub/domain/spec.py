"""Workflow spec v1: the one format for UI, API, CLI and files (SPEC.md §2).

A spec is YAML or JSON text (or an already parsed mapping) describing a workflow's run params and its nodes.
:func:`parse_spec` turns it into immutable pydantic models and checks every rule of §2 in one pass, so a user
sees all that is wrong at once. Each problem is a :class:`SpecIssue` that names where it is (``nodes[2]
'step2'``), which field (``inputs[0].from``) and what is wrong; together they form a :class:`SpecError`.

Validation happens in two stages. First each param and node is validated on its own (types, name patterns,
bounds, paths), so one broken node does not hide the problems of the others. Then the rules that span the
workflow are checked: unique names, references (``params.<param>`` / ``<node>.<output>``), ``depends_on``,
cycles, module interfaces and, when the caller knows them, clusters, storages and modules. A node that failed the
first stage still counts as existing in the second, so it does not cause follow-up errors elsewhere.

Clusters, storages and modules are checked only when the caller passes the known ones; offline validation
(``aihub validate``) skips those checks. Building a :class:`WorkflowSpec` directly runs the offline checks too, so
no invalid spec object exists.
"""

from __future__ import annotations

import difflib
import json
import math
import posixpath
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from aihub.domain import dag
from aihub.domain.messages import Message, msg
from aihub.domain.names import is_human_name

__all__ = [
    "InputDecl",
    "ModuleInterface",
    "NodeSpec",
    "NodeUi",
    "OutputDecl",
    "ParamDecl",
    "SpecError",
    "SpecIssue",
    "WorkflowSpec",
    "load_spec_file",
    "parse_spec",
    "validate_run_params",
]

NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
WORKFLOW_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
MODULE_NAME_PATTERN = re.compile(r"[a-z0-9-]+")
RESERVED_ENV_PREFIX = "AI_HUB_"
PARAMS_REF = "params"
LOCAL_CLUSTER = "local"
MAX_YAML_NODES = 1_000_000  # after alias expansion; guards against "billion laughs" documents


# --- issues ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec: where (``nodes[2] 'step2'``), which field (``inputs[0].from``) and what."""

    location: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class SpecError(ValueError):
    """A spec broke one or more rules; ``issues`` lists them all, one per line in ``str(error)``."""

    def __init__(self, issues: Sequence[SpecIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))

    @property
    def message(self) -> str:
        """``str(error)``, but one issue stays a translatable message (``{field}: {message}``)."""
        if len(self.issues) == 1:
            issue = self.issues[0]
            return msg("{field}: {message}", field=issue.location, message=issue.message)
        return str(self)


class _Issues:
    """Collects issues with a sort key, so that each param's and node's problems come out together, in order."""

    def __init__(self) -> None:
        self._items: list[tuple[tuple[int, int], int, SpecIssue]] = []

    def add(self, key: tuple[int, int], location: str, field: str, message: str) -> None:
        self._items.append((key, len(self._items), SpecIssue(location, field, message)))

    def __bool__(self) -> bool:
        return bool(self._items)

    def sorted(self) -> list[SpecIssue]:
        return [issue for _, _, issue in sorted(self._items, key=lambda item: item[:2])]


_WORKFLOW, _PARAMS, _NODES = 0, 1, 2
_KIND_PARAM, _KIND_NODE, _KIND_INPUT, _KIND_OUTPUT = msg("param"), msg("node"), msg("input"), msg("output")
_WORKFLOW_LOCATION = msg("workflow")  # where a problem of the whole workflow is


def _location(section: str, index: int, name: object) -> str:
    return f"{section}[{index}] '{name}'" if isinstance(name, str) else f"{section}[{index}]"


def _listing(names: Iterable[str], limit: int = 10) -> str:
    names = list(names)
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, … ({len(names)} in all)"


def _did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.75)
    return msg(" (did you mean {name}?)", name=f"'{close[0]}'") if close else ""


def _type_name(value: object) -> str:
    names = {
        dict: msg("a mapping"),
        list: msg("a list"),
        str: msg("a string"),
        bool: msg("a boolean"),
        type(None): msg("null"),
    }
    for kind, label in names.items():
        if isinstance(value, kind):
            return label
    return msg("a number") if isinstance(value, int | float) else type(value).__name__


# --- field types -------------------------------------------------------------------------------------------


def _identifier(value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError(
            msg(
                "{value} is not a valid name: use letters, digits and '_', not starting with a digit "
                "(it becomes a shell variable)",
                value=repr(value),
            )
        )
    return value


def _node_name(value: str) -> str:
    if value == PARAMS_REF:
        raise ValueError(msg("'params' is reserved (references 'params.<param>' use it)"))
    return value


def _not_reserved_env(value: str) -> str:
    if value.startswith(RESERVED_ENV_PREFIX):
        raise ValueError(
            msg(
                "{value} starts with {prefix}, which is reserved for the platform's variables",
                value=repr(value),
                prefix=RESERVED_ENV_PREFIX,
            )
        )
    return value


def _workflow_name(value: str) -> str:
    if not value:  # (a new workflow's form before its name is typed: what to do, not the name's whole rule)
        raise ValueError(msg("is required"))
    if not is_human_name(value):
        raise ValueError(
            msg(
                "{value} is not a valid workflow name: use 1 to 63 letters (Chinese too; Latin ones "
                "lowercase), digits and '-', starting with a letter or digit",
                value=repr(value),
            )
        )
    return value


def _module_name(value: str) -> str:
    if not MODULE_NAME_PATTERN.fullmatch(value):
        raise ValueError(
            msg(
                "{value} is not a valid module name: use lowercase letters, digits and '-'",
                value=repr(value),
            )
        )
    return value


def _reference(value: str) -> str:
    parts = value.split(".")
    if len(parts) != 2 or not all(NAME_PATTERN.fullmatch(part) for part in parts):
        raise ValueError(
            msg("{value} is not a reference: use 'params.<param>' or '<node>.<output>'", value=repr(value))
        )
    return value


def _output_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(msg("{value} must be an absolute path", value=repr(value)))
    if "\0" in value:
        raise ValueError(msg("must not contain a NUL character"))
    normal = "/" + posixpath.normpath(value).lstrip("/")
    if normal == "/":
        raise ValueError(msg("must not be '/'"))
    return normal


def scalar_to_str(value: object) -> str:
    """The text form of a param/input/env value; booleans are ``true``/``false``.

    Numbers come out in Python's spelling (YAML ``0.00001`` becomes ``1e-05``); quote a value to keep it as written.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float | date):
        return str(value)
    raise ValueError(msg("must be a string, number or boolean (got {kind})", kind=_type_name(value)))


def _optional_scalar(value: object) -> str | None:
    return None if value is None else scalar_to_str(value)


def _none_as(empty: Callable[[], object]) -> BeforeValidator:
    """YAML's ``inputs:`` with nothing under it means "none", not an error."""
    return BeforeValidator(lambda value: empty() if value is None else value)


Name = Annotated[str, AfterValidator(_identifier)]
NodeName = Annotated[str, AfterValidator(_identifier), AfterValidator(_node_name)]
VariableName = Annotated[str, AfterValidator(_identifier), AfterValidator(_not_reserved_env)]
WorkflowName = Annotated[str, AfterValidator(_workflow_name)]
ModuleName = Annotated[str, AfterValidator(_module_name)]
Reference = Annotated[str, AfterValidator(_reference)]
OutputPath = Annotated[str, AfterValidator(_output_path)]
Text = Annotated[str, BeforeValidator(scalar_to_str)]
OptionalText = Annotated[str | None, BeforeValidator(_optional_scalar)]
PlainText = Annotated[str, _none_as(str)]


# --- models ------------------------------------------------------------------------------------------------


#: one shared ``model_fields_set`` per distinct set of given fields (see ``_SpecModel.model_post_init``)
_FIELDS_SETS: dict[frozenset[str], set[str]] = {}
_FIELDS_SETS_MAX = 1024


class _SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    def model_post_init(self, context: Any, /) -> None:
        """Instances given the same fields share one ``model_fields_set``.

        pydantic gives every instance a set of its own (216 bytes for a node's usual three fields, a fifth of a
        parsed node), and a 10,000-node spec is held by the engine for the run's life. The models are frozen:
        pydantic only adds to the set on assignment, which they refuse, and ``model_copy`` copies it first.
        """
        given = self.__pydantic_fields_set__
        shared = _FIELDS_SETS.get(frozenset(given))
        if shared is None:
            if len(_FIELDS_SETS) >= _FIELDS_SETS_MAX:
                return
            shared = _FIELDS_SETS.setdefault(frozenset(given), given)
        object.__setattr__(self, "__pydantic_fields_set__", shared)


class ParamDecl(_SpecModel):
    """A run param: its value is given when a run is created; without a default it is required."""

    name: Name
    description: PlainText = ""
    default: OptionalText = None


class InputDecl(_SpecModel):
    """A node input, visible to the command as ``$name``: a reference (``from``) or a literal ``value``."""

    name: VariableName
    source: Reference | None = Field(default=None, alias="from")
    value: OptionalText = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Self:
        if (self.source is None) == (self.value is None):
            raise ValueError(
                msg("input {name} needs exactly one of 'from' and 'value'", name=repr(self.name))
            )
        return self

    @property
    def is_param_ref(self) -> bool:
        """True for ``from: params.<param>``."""
        return self.source is not None and self.source.startswith(PARAMS_REF + ".")

    @property
    def ref_param(self) -> str | None:
        """The param of ``from: params.<param>``, else None."""
        return self.source.partition(".")[2] if self.is_param_ref and self.source else None

    @property
    def ref_node(self) -> str | None:
        """The node of ``from: <node>.<output>``, else None (literals and param references)."""
        return self.source.partition(".")[0] if self.source and not self.is_param_ref else None

    @property
    def ref_output(self) -> str | None:
        """What ``from`` names after the dot: the output of ``<node>.<output>``, the param of ``params.<param>``.

        None for literals.
        """
        return self.source.partition(".")[2] if self.source else None


class OutputDecl(_SpecModel):
    """A node output: ``text`` (the file's content) or ``path`` (the file or directory, as an artifact)."""

    name: Name
    path: OutputPath
    type: Literal["text", "path"]
    description: PlainText = ""


#: how far from the origin a node may be drawn (``ui.x``, ``ui.y``), in canvas pixels
UI_MAX = 100_000


def _coordinate(value: object) -> int:
    """A finite number (booleans and strings refused), rounded to a whole pixel."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(msg("must be a number (got {value})", value=repr(value)))
    return round(value)


Coordinate = Annotated[int, BeforeValidator(_coordinate), Field(ge=-UI_MAX, le=UI_MAX)]


class NodeUi(_SpecModel):
    """Where the editor's canvas drew the node (its top-left corner); the engine ignores it."""

    x: Coordinate
    y: Coordinate


class NodeSpec(_SpecModel):
    """One node: a plain node (image + shell command) or a module node (everything from the module)."""

    name: NodeName
    description: PlainText = ""
    image: PlainText = ""
    command: PlainText = ""
    module: ModuleName | None = None
    depends_on: Annotated[list[str], _none_as(list)] = Field(default_factory=list)
    inputs: Annotated[list[InputDecl], _none_as(list)] = Field(default_factory=list)
    outputs: Annotated[list[OutputDecl], _none_as(list)] = Field(default_factory=list)
    task_type: Literal["compute", "monitor"] = "compute"
    cluster: Annotated[str, Field(min_length=1)] = LOCAL_CLUSTER
    sku_count: Annotated[int, Field(ge=1)] = 1
    retries: Annotated[int, Field(ge=0, le=100)] = 0
    env: Annotated[dict[VariableName, Text], _none_as(dict)] = Field(default_factory=dict)
    storages: Annotated[list[str], _none_as(list)] = Field(default_factory=list)
    cache: bool = True
    ui: NodeUi | None = None

    @property
    def is_module(self) -> bool:
        return self.module is not None

    def parents(self) -> list[str]:
        """Nodes this one waits for: ``depends_on`` then nodes its inputs refer to, without duplicates."""
        referenced = (decl.ref_node for decl in self.inputs)
        return list(dict.fromkeys([*self.depends_on, *(name for name in referenced if name is not None)]))


@dataclass
class ModuleInterface:
    """What a module offers a module node: the inputs it takes, the outputs it makes, its default env."""

    inputs: list[str]
    outputs: list[OutputDecl]
    env: dict[str, str] = field(default_factory=dict)


class WorkflowSpec(_SpecModel):
    """A whole workflow spec. Instances are valid (offline rules) and immutable, like the versions they snapshot."""

    name: WorkflowName
    description: PlainText = ""
    params: Annotated[list[ParamDecl], _none_as(list)] = Field(default_factory=list)
    nodes: Annotated[list[NodeSpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        issues = _Issues()
        _check_workflow(_Draft.of(self), issues, clusters=None, storages=None, modules=None)
        if issues:
            raise ValueError(str(SpecError(issues.sorted())))
        return self

    def node(self, name: str) -> NodeSpec:
        """The node called ``name``; KeyError if there is none."""
        return self._nodes_by_name[name]

    @cached_property
    def _nodes_by_name(self) -> dict[str, NodeSpec]:
        return {node.name: node for node in self.nodes}

    def parents(self) -> dict[str, list[str]]:
        """``node -> parents`` (depends_on and referenced nodes), in declaration order."""
        return {node.name: node.parents() for node in self.nodes}

    def topological_order(self) -> list[str]:
        """Node names, parents first; otherwise in declaration order."""
        return dag.topological_order(self.parents())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form using the spec's own keys (``from``), without fields left at their defaults."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)

    def to_yaml(self) -> str:
        """Tidy YAML for export: keys in spec order, multi-line commands as ``|`` blocks."""
        return yaml.dump(self.to_dict(), Dumper=_SpecDumper, sort_keys=False, allow_unicode=True, width=100)


# --- semantic rules (span more than one field) --------------------------------------------------------------


@dataclass(frozen=True)
class _Gaps:
    """What is not known about a node that failed the per-element stage and was only partly salvaged.

    ``fields`` were left out or kept only in part; ``positions`` maps each kept item of ``inputs`` / ``outputs``
    to its position in the document, so messages still point at the right item.
    """

    fields: frozenset[str]
    positions: Mapping[str, tuple[int, ...]]


@dataclass
class _Draft:
    """A workflow after the per-element stage: models where they validated (or were salvaged), else None.

    ``*_names`` hold the raw names (None when not a string) so broken elements still count as existing.
    """

    param_names: list[str | None] | None  # None: the params section itself is broken, so unknown
    node_names: list[str | None]
    nodes: list[NodeSpec | None]
    gaps: dict[int, _Gaps] = field(default_factory=dict)

    @classmethod
    def of(cls, spec: WorkflowSpec) -> _Draft:
        return cls([p.name for p in spec.params], [n.name for n in spec.nodes], list(spec.nodes))


def _first_index(names: Sequence[str | None]) -> dict[str, int]:
    first: dict[str, int] = {}
    for index, name in enumerate(names):
        if name is not None:
            first.setdefault(name, index)
    return first


class _WorkflowChecker:
    """Checks the rules between elements; one method per rule, each adding issues to the collector."""

    def __init__(
        self,
        draft: _Draft,
        issues: _Issues,
        clusters: Collection[str] | None,
        storages: Collection[str] | None,
        modules: Mapping[str, ModuleInterface] | None,
    ) -> None:
        self.draft = draft
        self.issues = issues
        self.clusters = None if clusters is None else {LOCAL_CLUSTER, *clusters}
        self.storages = None if storages is None else set(storages)
        self.modules = modules
        self.param_index = _first_index(draft.param_names or [])
        self.node_index = _first_index(draft.node_names)

    def run(self) -> None:
        self.check_unique_names(
            _PARAMS, "params", self.draft.param_names or [], self.param_index, _KIND_PARAM
        )
        self.check_unique_names(_NODES, "nodes", self.draft.node_names, self.node_index, _KIND_NODE)
        for index, node in enumerate(self.draft.nodes):
            if node is not None:
                self.check_node(index, node)
        self.check_cycles()

    def _add(self, index: int, field: str, message: str) -> None:
        location = _location("nodes", index, self.draft.node_names[index])
        self.issues.add((_NODES, index), location, field, message)

    def gaps(self, index: int) -> frozenset[str]:
        gaps = self.draft.gaps.get(index)
        return gaps.fields if gaps else frozenset()

    def item(self, index: int, label: str, position: int) -> str:
        """``inputs[2]``: the item's field path, by its position in the document."""
        gaps = self.draft.gaps.get(index)
        return f"{label}[{gaps.positions[label][position] if gaps else position}]"

    def check_unique_names(
        self, section: int, label: str, names: list[str | None], first: dict[str, int], kind: str
    ) -> None:
        for index, name in enumerate(names):
            if name is not None and first[name] != index:
                message = msg(
                    "{kind} name {name} is already used by {other}",
                    kind=kind,
                    name=f"'{name}'",
                    other=f"{label}[{first[name]}]",
                )
                self.issues.add((section, index), _location(label, index, name), "name", message)

    def check_node(self, index: int, node: NodeSpec) -> None:
        self.check_command(index, node)
        self.check_unique_items(index, "inputs", [decl.name for decl in node.inputs], _KIND_INPUT)
        self.check_unique_items(index, "outputs", [decl.name for decl in node.outputs], _KIND_OUTPUT)
        self.check_env_vs_inputs(index, node)
        for position, decl in enumerate(node.inputs):
            if decl.source is not None:
                self.check_reference(index, node, position, decl)
        self.check_depends_on(index, node)
        self.check_cluster(index, node)
        self.check_storages(index, node)
        self.check_module(index, node)

    def check_command(self, index: int, node: NodeSpec) -> None:
        if self.gaps(index) & {"command", "module", "image", "outputs"}:
            return
        if node.module is None:
            if not node.command.strip():
                self._add(index, "command", msg("a plain node needs a command (or a module)"))
            return
        owned = {"command": node.command, "image": node.image, "outputs": node.outputs}
        for name, value in owned.items():
            if value:
                message = msg(
                    "a module node takes its {field} from module {module}; remove it",
                    field=name,
                    module=f"'{node.module}'",
                )
                self._add(index, name, message)

    def check_unique_items(self, index: int, label: str, names: list[str], kind: str) -> None:
        first = _first_index(names)
        for position, name in enumerate(names):
            if first[name] != position:
                earlier, here = self.item(index, label, first[name]), self.item(index, label, position)
                message = msg(
                    "{kind} name {name} is used twice: {earlier} and {here}",
                    kind=kind,
                    name=f"'{name}'",
                    earlier=earlier,
                    here=here,
                )
                self._add(index, f"{here}.name", message)

    def check_env_vs_inputs(self, index: int, node: NodeSpec) -> None:
        inputs = {decl.name for decl in node.inputs}
        for key in node.env:
            if key in inputs:
                message = msg("env {key} and input {key} would set the same variable", key=f"'{key}'")
                self._add(index, f"env.{key}", message)

    def check_reference(self, index: int, node: NodeSpec, position: int, decl: InputDecl) -> None:
        field = f"{self.item(index, 'inputs', position)}.from"
        ref = {"input": f"'{decl.name}'", "source": f"'{decl.source}'"}
        if decl.ref_param is not None:
            if self.draft.param_names is not None and decl.ref_param not in self.param_index:
                hint = _did_you_mean(decl.ref_param, self.param_index)
                message = msg(
                    "input {input} refers to {source}, but there is no param {param}{hint}",
                    **ref,
                    param=f"'{decl.ref_param}'",
                    hint=hint,
                )
                self._add(index, field, message)
            return
        target, output = decl.ref_node or "", decl.ref_output or ""
        if target == node.name:
            own = msg("input {input} refers to {source}, but a node cannot use its own outputs", **ref)
            self._add(index, field, own)
        elif target not in self.node_index:
            hint = _did_you_mean(target, (name for name in self.node_index if name != node.name))
            message = msg(
                "input {input} refers to {source}, but there is no node {node}{hint}",
                **ref,
                node=f"'{target}'",
                hint=hint,
            )
            self._add(index, field, message)
        else:
            offered = self.outputs_of(self.node_index[target])
            if offered is not None and output not in offered:
                message = msg(
                    "input {input} refers to {source}, but node {node} has no output {output} "
                    "(its outputs: {listing})",
                    **ref,
                    node=f"'{target}'",
                    output=f"'{output}'",
                    listing=_listing(offered),
                )
                self._add(index, field, message)

    def outputs_of(self, index: int) -> list[str] | None:
        """Output names of a node, or None when they cannot be known (broken node, module not given)."""
        node = self.draft.nodes[index]
        if node is None or self.gaps(index) & {"outputs", "module"}:
            return None
        if node.module is None:
            return [decl.name for decl in node.outputs]
        if self.modules is None or node.module not in self.modules:
            return None
        return [decl.name for decl in self.modules[node.module].outputs]

    def check_depends_on(self, index: int, node: NodeSpec) -> None:
        for position, name in enumerate(node.depends_on):
            field = f"depends_on[{position}]"
            if name == node.name:
                self._add(index, field, msg("depends_on names the node itself ({name})", name=f"'{name}'"))
            elif name not in self.node_index:
                hint = _did_you_mean(name, (other for other in self.node_index if other != node.name))
                message = msg(
                    "depends_on names {name}, but there is no node {name}{hint}", name=f"'{name}'", hint=hint
                )
                self._add(index, field, message)

    def check_cluster(self, index: int, node: NodeSpec) -> None:
        if self.clusters is not None and node.cluster not in self.clusters:
            known = _listing(sorted(self.clusters))
            message = msg(
                "unknown virtual cluster {name} (known: {known})", name=f"'{node.cluster}'", known=known
            )
            self._add(index, "cluster", message)

    def check_storages(self, index: int, node: NodeSpec) -> None:
        if self.storages is None:
            return
        for position, name in enumerate(node.storages):
            if name not in self.storages:
                known = _listing(sorted(self.storages))
                message = msg("unknown data storage {name} (known: {known})", name=f"'{name}'", known=known)
                self._add(index, f"storages[{position}]", message)

    def check_module(self, index: int, node: NodeSpec) -> None:
        if node.module is None or self.modules is None:
            return
        interface = self.modules.get(node.module)
        if interface is None:
            hint = _did_you_mean(node.module, self.modules)
            self._add(index, "module", msg("unknown module {name}{hint}", name=f"'{node.module}'", hint=hint))
            return
        for position, decl in enumerate(node.inputs):
            if decl.name not in interface.inputs:
                takes = _listing(interface.inputs)
                message = msg(
                    "module {module} has no input {input} (its inputs: {takes})",
                    module=f"'{node.module}'",
                    input=f"'{decl.name}'",
                    takes=takes,
                )
                self._add(index, f"{self.item(index, 'inputs', position)}.name", message)
        if "inputs" in self.gaps(index):
            return
        bound = {decl.name for decl in node.inputs}
        for name in interface.inputs:
            if name not in bound:
                message = msg(
                    "input {input} of module {module} is not bound",
                    input=f"'{name}'",
                    module=f"'{node.module}'",
                )
                self._add(index, "inputs", message)

    def check_cycles(self) -> None:
        graph: dict[str, list[str]] = {}
        for index, node in enumerate(self.draft.nodes):
            if node is not None and self.node_index.get(node.name) == index:
                graph[node.name] = [p for p in node.parents() if p != node.name and p in self.node_index]
        for path in dag.cycles(graph):
            index = self.node_index[path[0]]
            self._add(index, self.edge_field(index, path[-2]), msg("cycle: {path}", path=" -> ".join(path)))

    def edge_field(self, index: int, parent: str) -> str:
        """The field of node ``index`` that makes ``parent`` its parent."""
        node = self.draft.nodes[index]
        assert node is not None
        if parent in node.depends_on:
            return f"depends_on[{node.depends_on.index(parent)}]"
        position = next(i for i, decl in enumerate(node.inputs) if decl.ref_node == parent)
        return f"{self.item(index, 'inputs', position)}.from"


def _check_workflow(
    draft: _Draft,
    issues: _Issues,
    *,
    clusters: Collection[str] | None,
    storages: Collection[str] | None,
    modules: Mapping[str, ModuleInterface] | None,
) -> None:
    _WorkflowChecker(draft, issues, clusters, storages, modules).run()


# --- structural stage: pydantic errors as issues ----------------------------------------------------------


def _format_loc(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        if part == "[key]":
            continue
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _model_at(model: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel]:
    """The model whose field ``loc`` ends in (for "did you mean" on unknown fields)."""
    if model is NodeSpec and len(loc) >= 3 and loc[0] == "inputs":
        return InputDecl
    if model is NodeSpec and len(loc) >= 3 and loc[0] == "outputs":
        return OutputDecl
    if model is NodeSpec and len(loc) >= 2 and loc[0] == "ui":
        return NodeUi
    return model


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _describe_error(error: Mapping[str, Any], model: type[BaseModel]) -> str:
    """A short, specific message for one pydantic error."""
    kind, ctx, value = error["type"], error.get("ctx", {}), error.get("input")
    loc = error["loc"]
    if kind == "value_error":
        reason = ctx["error"].args[0] if ctx["error"].args else None
        return reason if isinstance(reason, Message) else str(ctx["error"])
    if kind == "missing":
        return msg("is required")
    if kind == "extra_forbidden":
        return msg(
            "unknown field{hint}", hint=_did_you_mean(str(loc[-1]), _field_names(_model_at(model, loc)))
        )
    if kind == "literal_error":
        return msg("must be {expected} (got {value})", expected=ctx["expected"], value=repr(value))
    if kind == "greater_than_equal":
        return msg("must be at least {minimum} (got {value})", minimum=ctx["ge"], value=repr(value))
    if kind == "less_than_equal":
        return msg("must be at most {maximum} (got {value})", maximum=ctx["le"], value=repr(value))
    if kind in {"model_type", "model_attributes_type", "dict_type"}:
        return msg("must be a mapping (got {kind})", kind=_type_name(value))
    expected = {"string_type": msg("a string"), "list_type": msg("a list"), "bool_type": msg("true or false")}
    expected |= {
        "bool_parsing": msg("true or false"),
        "int_type": msg("an integer"),
        "int_parsing": msg("an integer"),
    }
    expected |= {"int_from_float": msg("an integer"), "too_short": msg("non-empty")}
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        return msg("must be an integer (got {value})", value=repr(value))
    if kind in expected:
        return msg("must be {expected} (got {value})", expected=expected[kind], value=repr(value))
    return str(error["msg"])


def _add_validation_errors(
    issues: _Issues, key: tuple[int, int], location: str, exc: ValidationError, model: type[BaseModel]
) -> None:
    for error in exc.errors(include_url=False):
        field = _format_loc(error["loc"])
        message = _describe_error(error, model)
        issues.add(
            key,
            location,
            field,
            msg("{field}: {message}", field=field, message=message) if field else message,
        )


def _element_name(item: object) -> str | None:
    name = item.get("name") if isinstance(item, Mapping) else None
    return name if isinstance(name, str) else None


def _not_a_list(issues: _Issues, field: str, raw: object) -> None:
    """The workflow's ``params`` or ``nodes`` is there but not a list."""
    problem = msg("must be a list (got {kind})", kind=_type_name(raw))
    issues.add(
        (_WORKFLOW, 0), _WORKFLOW_LOCATION, field, msg("{field}: {message}", field=field, message=problem)
    )


def _validate_params(raw: object, issues: _Issues) -> tuple[list[str | None] | None, list[ParamDecl]]:
    """Validates each run param on its own; returns all raw names (None if unknowable) and the valid params."""
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        _not_a_list(issues, "params", raw)
        return None, []
    params: list[ParamDecl] = []
    for index, item in enumerate(raw):
        try:
            params.append(ParamDecl.model_validate(item))
        except ValidationError as exc:
            location = _location("params", index, _element_name(item))
            _add_validation_errors(issues, (_PARAMS, index), location, exc, ParamDecl)
    return [_element_name(item) for item in raw], params


def _validate_nodes(raw: object, issues: _Issues) -> _Draft:
    """Validates each node on its own, salvaging what it can of broken ones for the semantic stage."""
    draft = _Draft([], [], [])
    if raw is None or raw == []:
        issues.add(
            (_WORKFLOW, 0), _WORKFLOW_LOCATION, "nodes", msg("nodes: a workflow needs at least one node")
        )
        return draft
    if not isinstance(raw, list):
        _not_a_list(issues, "nodes", raw)
        return draft
    for index, item in enumerate(raw):
        draft.node_names.append(_element_name(item))
        try:
            draft.nodes.append(NodeSpec.model_validate(item))
        except ValidationError as exc:
            location = _location("nodes", index, _element_name(item))
            _add_validation_errors(issues, (_NODES, index), location, exc, NodeSpec)
            salvaged = _salvage_node(item, exc)
            draft.nodes.append(salvaged[0] if salvaged else None)
            if salvaged:
                draft.gaps[index] = salvaged[1]
    return draft


_ITEM_LISTS = ("inputs", "outputs")


def _salvage_node(raw: object, exc: ValidationError) -> tuple[NodeSpec, _Gaps] | None:
    """The valid part of a broken node (invalid fields and items left out), so its references still get checked."""
    if not isinstance(raw, Mapping):
        return None
    broken: set[str] = set()
    broken_items: dict[str, set[int]] = {label: set() for label in _ITEM_LISTS}
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        if len(loc) >= 2 and loc[0] in broken_items and isinstance(loc[1], int):
            broken_items[str(loc[0])].add(loc[1])
        elif loc:
            broken.add(str(loc[0]))
    data = {key: value for key, value in raw.items() if key not in broken}
    positions: dict[str, tuple[int, ...]] = {}
    for label, failed in broken_items.items():
        items = data.get(label) or []
        positions[label] = tuple(i for i in range(len(items)) if i not in failed)
        if failed:
            data[label] = [items[i] for i in positions[label]]
            broken.add(label)
    try:
        return NodeSpec.model_validate(data), _Gaps(frozenset(broken), positions)
    except ValidationError:
        return None


_HEADER_FIELDS: dict[str, TypeAdapter[str]] = {
    "name": TypeAdapter(WorkflowName),
    "description": TypeAdapter(PlainText),
}


def _validate_header(data: Mapping[str, Any], issues: _Issues) -> dict[str, str]:
    header: dict[str, str] = {}
    for key in data:
        if key not in WorkflowSpec.model_fields:
            hint = _did_you_mean(str(key), WorkflowSpec.model_fields)
            message = msg("{field}: unknown field{hint}", field=key, hint=hint)
            issues.add((_WORKFLOW, 0), _WORKFLOW_LOCATION, str(key), message)
    for key, adapter in _HEADER_FIELDS.items():
        if key not in data:
            if key == "name":
                message = msg("{field}: {message}", field=key, message=msg("is required"))
                issues.add((_WORKFLOW, 0), _WORKFLOW_LOCATION, key, message)
            continue
        try:
            header[key] = adapter.validate_python(data[key])
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                message = msg("{field}: {message}", field=key, message=_describe_error(error, WorkflowSpec))
                issues.add((_WORKFLOW, 0), _WORKFLOW_LOCATION, key, message)
    return header


# --- documents ----------------------------------------------------------------------------------------------

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _SpecLoader(_BaseLoader):  # type: ignore[misc]
    """Safe YAML loader that rejects duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        msg("duplicate key {key}", key=repr(key_node.value)),
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _SpecDumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """Writes multi-line strings (commands) as literal blocks."""


def _represent_str(dumper: Any, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_SpecDumper.add_representer(str, _represent_str)


def _yaml_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Rejects recursive aliases and documents that grow huge once aliases are expanded."""
    size: dict[int, int] = {}
    started: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            size[key] = 1 + sum(size[id(child)] for child in _yaml_children(node))
            if size[key] > MAX_YAML_NODES:
                raise ValueError(
                    msg(
                        "the document has more than {count} values once aliases are expanded",
                        count=MAX_YAML_NODES,
                    )
                )
            continue
        if key in size:
            continue
        if key in started:
            raise ValueError(msg("recursive YAML alias at line {line}", line=node.start_mark.line + 1))
        started.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _yaml_children(node) if id(child) not in size)


def _load_yaml(text: str) -> object:
    loader = _SpecLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        if "*" in text:  # every alias starts with '*'; without one there is nothing to expand
            _check_expansion(root)
        return loader.construct_document(root)
    finally:
        loader.dispose()


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(msg("invalid JSON: duplicate key {key}", key=repr(key)))
        result[key] = value
    return result


#: the fixed problem texts of PyYAML (libyaml) that a spec's author meets most, as messages so that they are
#: translated; any other problem is shown as PyYAML words it
_YAML_PROBLEMS = {
    str(message): message
    for message in (
        msg("did not find expected ',' or ']'"),
        msg("did not find expected '-' indicator"),
        msg("did not find expected key"),
        msg("could not find expected ':'"),
        msg("mapping values are not allowed in this context"),
        msg("found unexpected end of stream"),
        msg("found character that cannot start any token"),
        msg("found undefined alias"),
        msg("but found another document"),
    )
}


def _parse_text(text: str) -> object:
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text, object_pairs_hook=_reject_duplicate_keys)
        except json.JSONDecodeError:
            pass  # maybe a YAML flow mapping; the YAML parser reports real syntax errors
    try:
        return _load_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or msg("syntax error")
        problem = _YAML_PROBLEMS.get(problem, problem)
        if mark is None:
            raise ValueError(msg("invalid YAML: {problem}", problem=problem)) from exc
        raise ValueError(
            msg(
                "invalid YAML at line {line}, column {column}: {problem}",
                line=mark.line + 1,
                column=mark.column + 1,
                problem=problem,
            )
        ) from exc
    except yaml.YAMLError as exc:
        raise ValueError(msg("invalid YAML: {problem}", problem=str(exc))) from exc


def _reason(exc: ValueError) -> str:
    """The message a ValueError was raised with: a :class:`Message` stays one (``str(exc)`` would lose it)."""
    return exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)


def _document_error(message: str) -> SpecError:
    return SpecError([SpecIssue("document", "", message)])


def _load_document(source: str | bytes | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        data: object = source
    else:
        try:
            text = source.decode("utf-8-sig") if isinstance(source, bytes) else source
            data = _parse_text(text)
        except UnicodeDecodeError as exc:
            raise _document_error(msg("not UTF-8 text (byte {position})", position=exc.start)) from exc
        except RecursionError as exc:
            raise _document_error(msg("the document is nested too deeply")) from exc
        except ValueError as exc:
            raise _document_error(_reason(exc)) from exc
    if data is None or (isinstance(data, Mapping) and not data):
        raise _document_error(msg("the spec is empty"))
    if not isinstance(data, Mapping):
        raise _document_error(
            msg("the spec must be a mapping with 'name' and 'nodes' (got {kind})", kind=_type_name(data))
        )
    return data


# --- public entry points ------------------------------------------------------------------------------------


def parse_spec(
    source: str | bytes | Mapping[str, Any],
    *,
    clusters: Collection[str] | None = None,
    storages: Collection[str] | None = None,
    modules: Mapping[str, ModuleInterface] | None = None,
) -> WorkflowSpec:
    """Parses and validates a spec (YAML/JSON text or a mapping); raises :class:`SpecError` with every issue.

    ``clusters``, ``storages`` and ``modules`` are what the author may use (``local`` is always a cluster); a
    ``None`` skips that check. Without ``modules`` references to a module node's outputs are accepted.
    """
    data = _load_document(source)
    issues = _Issues()
    header = _validate_header(data, issues)
    param_names, params = _validate_params(data.get("params"), issues)
    draft = _validate_nodes(data.get("nodes"), issues)
    draft.param_names = param_names
    _check_workflow(draft, issues, clusters=clusters, storages=storages, modules=modules)
    if issues:
        raise SpecError(issues.sorted())
    return WorkflowSpec.model_construct(
        name=header["name"],
        description=header.get("description", ""),
        params=params,
        nodes=draft.nodes,
    )


def load_spec_file(
    path: Path,
    *,
    clusters: Collection[str] | None = None,
    storages: Collection[str] | None = None,
    modules: Mapping[str, ModuleInterface] | None = None,
) -> WorkflowSpec:
    """Reads and parses a spec file (YAML or JSON, told apart by content). OSError if it cannot be read."""
    try:
        return parse_spec(Path(path).read_bytes(), clusters=clusters, storages=storages, modules=modules)
    except SpecError as exc:
        renamed = [
            SpecIssue(str(path), i.field, i.message) if i.location == "document" else i for i in exc.issues
        ]
        raise SpecError(renamed) from None


def validate_run_params(spec: WorkflowSpec, values: Mapping[str, object]) -> dict[str, str]:
    """The run's param values: defaults applied, all as text. A value of None counts as not given.

    Raises :class:`SpecError` naming every unknown param, missing required param and unusable value.
    """
    issues = _Issues()
    declared = {param.name: index for index, param in enumerate(spec.params)}
    for name in values:
        if name not in declared:
            takes = _listing(declared) if declared else msg("no params")
            issues.add(
                (_PARAMS, len(declared)),
                f"param '{name}'",
                name,
                msg("unknown param (this workflow takes: {params})", params=takes),
            )
    result: dict[str, str] = {}
    for index, param in enumerate(spec.params):
        value = values.get(param.name)
        if value is None:
            value = param.default
        try:
            if value is None:
                raise ValueError(msg("is required but no value was given"))
            result[param.name] = scalar_to_str(value)
        except ValueError as exc:
            issues.add((_PARAMS, index), f"param '{param.name}'", param.name, _reason(exc))
    if issues:
        raise SpecError(issues.sorted())
    return result
