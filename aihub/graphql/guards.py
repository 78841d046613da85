"""Checks of a whole operation before it executes: what a run token may call, and what the operation costs.

A run token (``AI_HUB_TOKEN``) is held by node code, which may be someone else's workflow, so it may call only
the short allow-list of ``aihub.services.tokens.RUN_TOKEN_OPERATIONS``, and the operations naming a run only
for its own run. The check looks at the operation's root fields (through fragments) with their arguments, so
an alias or a fragment cannot hide a forbidden field.

The cost of an operation (``QueryCost``) is counted before it runs, with its variables, in two budgets:
points — every field costs 1, and a list multiplies the cost of what it selects by its size (``first:``/
``limit:`` when the field takes one, else ``LIST_ESTIMATE``) — and log bytes — each log chunk's ``limit`` times
the sizes of the lists around it. Introspection is free. Over either budget (``AIHUB_MAX_QUERY_COST``,
``AIHUB_MAX_QUERY_LOG_BYTES``) the operation is refused whole with ``QUERY_TOO_COSTLY``: 30 aliases of
``run { nodes { logs(limit: 1048576) } }`` can no longer turn a 2.5 KB query into a 63 MB answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    Undefined,
    get_named_type,
    get_nullable_type,
)
from graphql.utilities import get_operation_ast, value_from_ast_untyped
from strawberry.extensions import SchemaExtension

from aihub.domain.messages import msg
from aihub.domain.tokens import TokenKind
from aihub.graphql.types.common import parse_id
from aihub.services.errors import ServiceError
from aihub.services.tokens import RUN_TOKEN_RUN_ARGUMENT, check_run_token_operation


def root_fields(document: DocumentNode, operation: OperationDefinitionNode) -> Iterator[FieldNode]:
    """The root fields an operation selects, through inline fragments and fragment spreads."""
    fragments = {d.name.value: d for d in document.definitions if hasattr(d, "type_condition")}
    pending: list[SelectionSetNode] = [operation.selection_set]
    seen: set[str] = set()
    while pending:
        for selection in pending.pop().selections:
            if isinstance(selection, FieldNode):
                yield selection
            elif isinstance(selection, InlineFragmentNode):
                pending.append(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in seen:
                seen.add(selection.name.value)
                fragment = fragments.get(selection.name.value)
                if fragment is not None:
                    pending.append(fragment.selection_set)  # type: ignore[attr-defined]


class RunTokenScope(SchemaExtension):
    """Refuses (``FORBIDDEN``) any root field outside a run token's allow-list, and a run other than its own."""

    def on_execute(self) -> Iterator[None]:
        ctx = self.execution_context
        row = getattr(ctx.context, "token_row", None)
        if row is not None and row.kind is TokenKind.RUN and ctx.graphql_document is not None:
            operation = get_operation_ast(ctx.graphql_document, ctx.operation_name)
            if operation is not None:
                self._check(row, ctx.graphql_document, operation, ctx.variables or {})
        yield

    def _check(
        self, row: Any, document: DocumentNode, operation: OperationDefinitionNode, variables: dict[str, Any]
    ) -> None:
        for field in root_fields(document, operation):
            name = field.name.value
            if name.startswith("__"):
                continue
            run_id = None
            if name in RUN_TOKEN_RUN_ARGUMENT:
                argument = RUN_TOKEN_RUN_ARGUMENT[name]
                run_id = parse_id(_argument(field, argument, variables) or "", argument)
            check_run_token_operation(row, name, run_id)


def _argument(field: FieldNode, name: str, variables: dict[str, Any]) -> Any:
    for argument in field.arguments or ():
        if argument.name.value == name:
            return value_from_ast_untyped(argument.value, variables)
    return None


# ------------------------------------------------------------------------------------------------ cost

#: the size assumed for a list field that does not say how many items it returns
LIST_ESTIMATE = 20
#: arguments that bound a list field's size
SIZE_ARGUMENTS = ("first", "limit")
#: fields whose ``limit`` is a number of bytes (log chunks), not a list size
BYTE_LIMITED = frozenset({"logs"})


class QueryTooCostly(ServiceError):
    code = "QUERY_TOO_COSTLY"


class _Costing:
    """Counts ``points`` (fields x list sizes) and ``log_bytes`` (log chunks' limits x the lists around them)."""

    def __init__(self, schema: GraphQLSchema, document: DocumentNode, variables: dict[str, Any]) -> None:
        self.schema = schema
        self.variables = variables
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.log_bytes = 0

    def selection(
        self,
        selection_set: SelectionSetNode | None,
        parent: Any,
        seen: frozenset[str],
        scale: int,
        page: int | None = None,
    ) -> int:
        """The points of a selection made ``scale`` times; ``page``: the ``first:`` of the page object it is
        in (its list's size)."""
        if selection_set is None or not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            return 0
        total = 0
        for node in selection_set.selections:
            if isinstance(node, FieldNode):
                total += self.field(node, parent, seen, scale, page)
            elif isinstance(node, InlineFragmentNode):
                inner = (
                    self.schema.get_type(node.type_condition.name.value) if node.type_condition else parent
                )
                total += self.selection(node.selection_set, inner, seen, scale, page)
            elif isinstance(node, FragmentSpreadNode) and node.name.value not in seen:
                fragment = self.fragments.get(node.name.value)
                if fragment is not None:
                    inner = self.schema.get_type(fragment.type_condition.name.value)
                    total += self.selection(
                        fragment.selection_set, inner, seen | {node.name.value}, scale, page
                    )
        return total

    def field(
        self,
        node: FieldNode,
        parent: GraphQLObjectType | GraphQLInterfaceType,
        seen: frozenset[str],
        scale: int,
        page: int | None,
    ) -> int:
        name = node.name.value
        definition = parent.fields.get(name)
        if name.startswith("__") or definition is None:
            return 0
        named = get_named_type(definition.type)
        if name in BYTE_LIMITED:
            self.log_bytes += scale * max(0, _int(self.argument(node, definition, "limit")))
            return 1 + self.selection(node.selection_set, named, seen, scale)
        size = next(
            (_int(self.argument(node, definition, a)) for a in SIZE_ARGUMENTS if a in definition.args), None
        )
        if not isinstance(get_nullable_type(definition.type), GraphQLList):
            # a page object (``runs(first:) { items }``): its list is as long as its ``first``
            return 1 + self.selection(node.selection_set, named, seen, scale, size)
        count = max(1, size if size is not None else page if page is not None else LIST_ESTIMATE)
        return 1 + count * self.selection(node.selection_set, named, seen, scale * count)

    def argument(self, node: FieldNode, definition: GraphQLField, name: str) -> Any:
        for argument in node.arguments or ():
            if argument.name.value == name:
                return value_from_ast_untyped(argument.value, self.variables)
        declared = definition.args.get(name)
        default = declared.default_value if declared is not None else None
        return None if default is Undefined else default


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def operation_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: dict[str, Any],
) -> tuple[int, int]:
    """What an operation may cost: (points, log bytes); see the module's docstring."""
    costing = _Costing(schema, document, variables)
    points = costing.selection(
        operation.selection_set, schema.get_root_type(operation.operation), frozenset(), 1
    )
    return points, costing.log_bytes


class QueryCost(SchemaExtension):
    """Refuses an operation over ``max_cost`` points or ``max_log_bytes`` before anything of it runs."""

    def __init__(self, max_cost: int, max_log_bytes: int) -> None:
        self.max_cost = max_cost
        self.max_log_bytes = max_log_bytes

    def on_execute(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.graphql_document is not None:
            operation = get_operation_ast(ctx.graphql_document, ctx.operation_name)
            if operation is not None:
                self._check(
                    *operation_cost(ctx.schema._schema, ctx.graphql_document, operation, ctx.variables or {})
                )
        yield

    def _check(self, points: int, log_bytes: int) -> None:
        hint = msg("ask for fewer items (first:, limit:), fewer log bytes or fewer aliases")
        if points > self.max_cost:
            raise QueryTooCostly(
                msg(
                    "the query would cost {points} points, more than the limit of {limit} "
                    "(AIHUB_MAX_QUERY_COST): {hint}",
                    points=points,
                    limit=self.max_cost,
                    hint=hint,
                )
            )
        if log_bytes > self.max_log_bytes:
            raise QueryTooCostly(
                msg(
                    "the query could read {size} bytes of logs, more than the limit of {limit} "
                    "(AIHUB_MAX_QUERY_LOG_BYTES): {hint}",
                    size=log_bytes,
                    limit=self.max_log_bytes,
                    hint=hint,
                )
            )
