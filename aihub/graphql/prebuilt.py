"""Hand-built results for the hot fields: a run's node list and a live event, completed without graphql-core.

graphql-core completes every field of every object one by one (the resolver through the middleware, the type
checks, the awaitable checks, a path per field): for the run detail of a 1,000-node run that is about 30,000
fields, most of the request's time; a live event is executed again for every subscriber. For selections it
can answer exactly, a resolver returns :class:`Prebuilt` instead: the field's finished JSON value, which
:class:`FastExecutionContext` passes through unchanged.

A selection is *plain* when every field in it is a field without arguments or directives on an object type
(aliases and ``__typename`` are fine), and every field either has no resolver (the attribute of the same name)
or is one of the ``extras`` the caller provides (a function of the object, e.g. a node's attempts from the
loader it has already awaited). Leaves are converted by their type's own output coercion, so the answer is the
one graphql-core would give; anything else (fragments, ``@include``, arguments, a field with another resolver,
a null in a non-null field) is not plain, and the resolver returns its ordinary objects. The schema is the same
either way; ``tests/graphql/test_prebuilt.py`` compares the two answers.

A built object is a :class:`Completed` (a ``dict``), which keeps its JSON text once made. A live event is built
once per selection for all its subscribers (:class:`BuiltCache`); being the event's root value, it is the whole
per-event result (``FastExecutionContext`` skips the per-event execution), and it goes to every subscriber as
the same text (``GraphQLView.encode_json``).
"""

from __future__ import annotations

import inspect
import json
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from graphql import (
    ExecutionResult,
    FieldNode,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    OperationDefinitionNode,
    SelectionSetNode,
    is_leaf_type,
)
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

#: a field computed by the caller, by ``"Type.field"``: (the object, the caller's data) -> the field's value
#: (objects for an object or list field)
Extra = Callable[[Any, Any], Any]

DEFINITION = "strawberry-definition"
#: ``next`` message texts kept per built object (one per operation id and response key seen)
_MESSAGES_PER_OBJECT = 64
#: plans kept per selection set (documents are cached too, so their selection sets are the same objects)
CACHED_PLANS = 512


class Prebuilt:
    """A field's finished value (JSON-ready), returned by a resolver instead of the objects to complete."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Completed(dict[str, Any]):
    """A built object; ``text`` is its JSON (compact separators), made once; ``message`` a ``next`` message
    carrying it, made once per operation id and response key."""

    __slots__ = ("_messages", "_text")

    def message(self, op: str, key: str) -> str:
        try:
            messages = self._messages
        except AttributeError:
            messages = self._messages = {}
        text = messages.get((op, key))
        if text is None:
            if len(messages) >= _MESSAGES_PER_OBJECT:
                messages.clear()
            head = '{"id":' + json.dumps(op) + ',"type":"next","payload":{"data":{' + json.dumps(key)
            text = messages[(op, key)] = head + ":" + self.text + "}}}"
        return text

    @property
    def text(self) -> str:
        try:
            return self._text
        except AttributeError:
            self._text: str = json.dumps(self, separators=(",", ":"))
            return self._text


class NotPlain(Exception):
    """The selection (or a value in it) needs graphql-core's general execution."""


def _result_index() -> int:
    """Where graphql-core's ``complete_value`` takes the resolver's result (3.2: last; 3.3: before
    ``position_context``)."""
    names = list(inspect.signature(StrawberryGraphQLCoreExecutionContext.complete_value).parameters)
    return names.index("result") - 1  # without ``self``


_RESULT = _result_index()


class FastExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's execution, except that a :class:`Prebuilt` result is already complete, and a subscription
    event that is one (the root value of the event's execution) is the whole answer."""

    def execute_operation(self, *args: Any, **kwargs: Any) -> Any:
        root = getattr(self, "root_value", None)
        if type(root) is Prebuilt:
            key = _single_root_key(self.operation)
            if key is not None:
                return ExecutionResult({key: root.value}, None)
        return super().execute_operation(*args, **kwargs)

    def build_per_event_executor(self, payload: Any) -> Any:
        """graphql-core 3.3 copies the executor for every event of every subscriber; a built event needs none."""
        if type(payload) is Prebuilt:
            key = _single_root_key(self.operation)
            if key is not None:
                return _Answered(ExecutionResult({key: payload.value}, None))
        return super().build_per_event_executor(payload)  # type: ignore[misc]

    def complete_value(self, return_type: GraphQLOutputType, *args: Any) -> Any:
        result = args[_RESULT - 1] if len(args) >= _RESULT else None
        if type(result) is Prebuilt:
            return result.value
        return super().complete_value(return_type, *args)


class _Answered:
    """Stands for a per-event executor whose result is known (``FastExecutionContext``)."""

    __slots__ = ("result",)

    def __init__(self, result: ExecutionResult) -> None:
        self.result = result

    def execute_operation(self, *args: Any) -> ExecutionResult:
        return self.result


def _single_root_key(operation: OperationDefinitionNode) -> str | None:
    """The response key of an operation that selects one root field, without directives (else None)."""
    selections = operation.selection_set.selections
    if len(selections) != 1:
        return None
    node = selections[0]
    if not isinstance(node, FieldNode) or node.directives:
        return None
    return node.alias.value if node.alias else node.name.value


# ------------------------------------------------------------------------------------------------ plans


class _Field:
    __slots__ = ("attr", "convert", "extra", "key", "list", "name", "non_null", "plan", "typename")

    def __init__(self, key: str, name: str) -> None:
        self.key = key
        self.name = name
        self.attr = ""
        self.extra: Extra | None = None
        self.convert: Callable[[Any], Any] | None = None
        self.plan: Plan | None = None
        self.list = False
        self.non_null = False
        self.typename: str | None = None


class Plan:
    """How to build the answer of one plain selection set on one object type."""

    def __init__(self, fields: list[_Field]) -> None:
        self.fields = fields
        #: the GraphQL names of the fields selected here (so a caller loads only what is needed)
        self.names = frozenset(f.name for f in fields)

    def build(self, obj: Any, data: Any = None) -> Completed:
        """The answer for ``obj``; ``data`` is passed to the extras. Raises :class:`NotPlain`."""
        out = Completed()
        for f in self.fields:
            if f.typename is not None:
                out[f.key] = f.typename
                continue
            value = f.extra(obj, data) if f.extra is not None else getattr(obj, f.attr)
            if value is None:
                if f.non_null:
                    raise NotPlain(f"null in the non-null field {f.key}")
                out[f.key] = None
            elif f.list:
                out[f.key] = [self._item(f, v, data) for v in value]
            else:
                out[f.key] = self._item(f, value, data)
        return out

    @staticmethod
    def _item(f: _Field, value: Any, data: Any) -> Any:
        if value is None:
            raise NotPlain(f"null in the list {f.key}")  # every list of ours holds non-null items
        if f.plan is not None:
            return f.plan.build(value, data)
        converted = f.convert(value) if f.convert is not None else value
        if converted is None:
            raise NotPlain(f"{f.key}: {value!r} does not convert")
        return converted


def _coercion(named: Any) -> Callable[[Any], Any]:
    return getattr(named, "coerce_output_value", None) or named.serialize


def _unwrap(type_: Any) -> tuple[Any, bool, bool]:
    """(named type, non-null, list); a list's items must be non-null."""
    non_null = isinstance(type_, GraphQLNonNull)
    inner = type_.of_type if non_null else type_
    if isinstance(inner, GraphQLList):
        item = inner.of_type
        if not isinstance(item, GraphQLNonNull) or isinstance(item.of_type, GraphQLList | GraphQLNonNull):
            raise NotPlain("a list of nullable items or of lists")
        return item.of_type, non_null, True
    return inner, non_null, False


def _plan_field(node: FieldNode, parent: GraphQLObjectType, extras: Mapping[str, Extra]) -> _Field:
    if node.arguments or node.directives:
        raise NotPlain("arguments or directives")
    name = node.name.value
    f = _Field(node.alias.value if node.alias else name, name)
    if name == "__typename":
        f.typename = parent.name
        return f
    definition = parent.fields.get(name)
    strawberry_field = definition.extensions.get(DEFINITION) if definition is not None else None
    if definition is None or strawberry_field is None:
        raise NotPlain(f"{parent.name}.{name} is not a strawberry field")
    if f"{parent.name}.{name}" in extras:
        f.extra = extras[f"{parent.name}.{name}"]
    elif strawberry_field.is_basic_field:
        f.attr = strawberry_field.python_name
    else:
        raise NotPlain(f"{parent.name}.{name} has its own resolver")
    named, f.non_null, f.list = _unwrap(definition.type)
    if is_leaf_type(named):
        if node.selection_set is not None:
            raise NotPlain("a selection on a leaf")
        f.convert = _coercion(named)
    elif isinstance(named, GraphQLObjectType) and node.selection_set is not None:
        f.plan = plan_of(node.selection_set, named, extras)
    else:
        raise NotPlain(f"{parent.name}.{name}: an abstract type")
    return f


def plan_of(selection_set: SelectionSetNode, parent: GraphQLObjectType, extras: Mapping[str, Extra]) -> Plan:
    """The plan of a selection set on ``parent``; ``extras`` by ``"Type.field"``. Raises :class:`NotPlain`."""
    fields: list[_Field] = []
    keys: set[str] = set()
    for node in selection_set.selections:
        if not isinstance(node, FieldNode):
            raise NotPlain("a fragment")
        f = _plan_field(node, parent, extras)
        if f.key in keys:
            raise NotPlain(f"{f.key} selected twice (merged by graphql-core)")
        keys.add(f.key)
        fields.append(f)
    return Plan(fields)


class Plans:
    """The plans of one hot field, by selection set (None: not plain); bounded."""

    def __init__(self, extras: Mapping[str, Extra] | None = None) -> None:
        self.extras = dict(extras or {})
        self._plans: OrderedDict[int, tuple[SelectionSetNode, Plan | None]] = OrderedDict()

    def for_info(self, info: Any) -> Plan | None:
        """The plan of the field being resolved (a strawberry ``Info``), or None when it is not plain."""
        raw = info._raw_info
        if not ENABLED or len(raw.field_nodes) != 1 or raw.field_nodes[0].selection_set is None:
            return None
        selection_set = raw.field_nodes[0].selection_set
        entry = self._plans.get(id(selection_set))
        if entry is not None and entry[0] is selection_set:
            return entry[1]
        plan: Plan | None = None
        try:
            named, _, _ = _unwrap(raw.return_type)
            if isinstance(named, GraphQLObjectType):
                plan = plan_of(selection_set, named, self.extras)
        except NotPlain:
            plan = None
        self._plans[id(selection_set)] = (selection_set, plan)
        if len(self._plans) > CACHED_PLANS:
            self._plans.popitem(last=False)
        return plan


#: off: every field is completed by graphql-core (the tests compare both answers)
ENABLED = True


class BuiltCache:
    """Answers built for shared objects (live events, delivered as the same object to every subscriber of a
    run), per plan: the first subscriber of a selection builds it, the others reuse it; the latest
    ``size`` objects are kept. Keys must be immutable (a frozen dataclass)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._built: OrderedDict[Hashable, dict[Plan, Completed]] = OrderedDict()
        #: the latest key and its answers: the subscribers of one event ask in a row (no hashing of the key)
        self._last: tuple[Hashable, dict[Plan, Completed]] | None = None

    def get(self, key: Hashable, plan: Plan, make: Callable[[Any], Any]) -> Completed:
        """The answer for ``key`` under ``plan``; ``make(key)`` gives the object to build it from."""
        last = self._last
        if last is not None and last[0] is key:
            by_plan = last[1]
        else:
            by_plan = self._built.get(key)  # type: ignore[assignment]
            if by_plan is None:
                by_plan = self._built[key] = {}
                if len(self._built) > self.size:
                    self._built.popitem(last=False)
            self._last = (key, by_plan)
        built = by_plan.get(plan)
        if built is None:
            built = by_plan[plan] = plan.build(make(key))
        return built


def next_message_text(message: object) -> str | None:
    """The JSON of a ``graphql-transport-ws`` ``next`` message whose data is one built answer, made from the
    answer's own JSON text (made once for every subscriber; the whole message once per operation id and
    response key, which subscribers of one client library share); None for any other message. The same text as
    ``json.dumps(message, separators=(",", ":"))``."""
    if type(message) is not dict or len(message) != 3:
        return None
    payload = message.get("payload")
    if type(payload) is not dict or len(payload) != 1:
        return None
    data = payload.get("data")
    if type(data) is not dict or len(data) != 1:
        return None
    ((key, value),) = data.items()
    if type(value) is not Completed or message.get("type") != "next" or list(message) != _NEXT_KEYS:
        return None
    op = message["id"]
    if type(op) is not str or type(key) is not str:
        return None
    return value.message(op, key)


_NEXT_KEYS = ["id", "type", "payload"]
