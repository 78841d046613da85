"""Smaller forms of what the engine keeps for a run's whole life: one shared empty container, one object per
equal string.

The engine holds a run's parsed spec and its node rows until the run ends (``aihub.engine.state.RunState``).
Parsed apart, a node's spec has empty containers of its own (``inputs``, ``outputs``, ``env`` and ``storages``
of a plain node: 232 bytes; ``depends_on`` too at the top of the graph) and its own copy of each parent's name
and of its command, and each
node row has its own empty ``inputs`` and ``outputs`` and another copy of its name: about a quarter of what a
10,000-node run keeps per node. :func:`compact_spec` gives them one object each.

The shared empties refuse changes (``TypeError``): a spec is immutable, and the engine replaces a row's
``inputs``/``outputs`` instead of changing them, so a change in place would be a bug that corrupts every node
at once — it fails loudly instead.
"""

from __future__ import annotations

from typing import Any, NoReturn

from aihub.domain.spec import WorkflowSpec


def _refuse(self: object, *args: Any, **kwargs: Any) -> NoReturn:
    raise TypeError(f"this shared empty {type(self).__mro__[1].__name__} cannot be changed")


class ReadOnlyList(list[Any]):
    """An empty list shared by many owners (see the module docstring)."""

    append = extend = insert = remove = pop = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse  # type: ignore[assignment]

    def __copy__(self) -> list[Any]:
        return []

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return []


class ReadOnlyDict(dict[Any, Any]):
    """An empty dict shared by many owners (see the module docstring)."""

    clear = pop = popitem = setdefault = update = _refuse
    __setitem__ = __delitem__ = __ior__ = _refuse  # type: ignore[assignment]

    def __copy__(self) -> dict[Any, Any]:
        return {}

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[Any, Any]:
        return {}


EMPTY_LIST = ReadOnlyList()
EMPTY_DICT = ReadOnlyDict()

#: a node's containers that are empty for most nodes
_NODE_CONTAINERS = ("depends_on", "inputs", "outputs", "env", "storages")


def shared_empty(value: Any) -> Any:
    """``value``, or the shared empty list or dict when it is an empty one."""
    if type(value) is list and not value:
        return EMPTY_LIST
    if type(value) is dict and not value:
        return EMPTY_DICT
    return value


def compact_spec(spec: WorkflowSpec, strings: dict[str, str]) -> WorkflowSpec:
    """``spec`` itself, its nodes' empty containers made the shared ones and their names, parents' names and
    commands one object per equal string (``strings``: text -> the object kept, filled as it goes; pass it on
    to give other copies of the names the same objects)."""

    def one(text: str) -> str:
        return strings.setdefault(text, text)

    for node in spec.nodes:
        fields = node.__dict__  # (the models are frozen: their fields are set here as pydantic sets them)
        for name in ("name", "command", "image"):
            fields[name] = one(fields[name])
        for name in _NODE_CONTAINERS:
            fields[name] = shared_empty(fields[name])
        for name in ("depends_on", "storages"):
            if fields[name]:
                fields[name][:] = [one(item) for item in fields[name]]
    return spec
