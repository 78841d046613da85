"""Per-caller checks of a whole operation before it executes: what a run token may call.

A run token (``AI_HUB_TOKEN``) is held by node code, which may be someone else's workflow, so it may call only
the short allow-list of ``aihub.services.tokens.RUN_TOKEN_OPERATIONS``, and the operations naming a run only
for its own run. The check looks at the operation's root fields (through fragments) with their arguments, so
an alias or a fragment cannot hide a forbidden field.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)
from graphql.utilities import get_operation_ast, value_from_ast_untyped
from strawberry.extensions import SchemaExtension

from aihub.db.models import TokenKind
from aihub.graphql.types.common import parse_id
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
    for argument in field.arguments:
        if argument.name.value == name:
            return value_from_ast_untyped(argument.value, variables)
    return None
