"""Precompiled answers for the simplest queries: ``query($id: ID!) { run(id: $id) { status } }`` without Strawberry's
generic machinery (issue 18).

A status poll paid about 0.5 ms of one CPU for Strawberry's HTTP view, the schema extensions' hooks (each a
context manager per request) and graphql-core's execution, for an answer of one field. A *simple* document is
answered here instead: one query operation (no directives) selecting one root field of :data:`ROOTS` (``run``)
whose argument is a variable ``$x: ID!`` or a literal, with a *plain* sub-selection (fields without
arguments, directives or own resolvers; aliases and ``__typename`` allowed: ``aihub.graphql.prebuilt``).

The document is parsed and validated once, by the same rules as the generic path (token limit, the specified
rules, Strawberry's, depth and aliases) and its cost checked against the same budget; what does not pass, or is
not simple, is remembered as such and always takes the generic path. A request is answered here only when
everything goes the expected way — a JSON body with ``query``/``variables``/``operationName`` only, a string
id, a signed-in caller, a run token allowed to read that run, no exception in the resolver, no null in a non-null
field; anything else (a missing or mistyped variable, no token, a bad id, a run token's own run refused, a
database error) falls back to the generic path, which gives the answer and the error it always gave. The
answer is built by the same resolver (``aihub.graphql.runs.run_by_id``: an invisible run is ``null``, exactly
like a missing one), with the same context (``GraphQLView.get_context``: request id, token check), counted in
the same operation metric, and sent by the same ``create_response``; ``tests/graphql/test_fastpath.py``
compares both paths' responses byte for byte over many documents.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLID,
    GraphQLNonNull,
    GraphQLObjectType,
    IntValueNode,
    NamedTypeNode,
    NonNullTypeNode,
    OperationDefinitionNode,
    OperationType,
    StringValueNode,
    VariableNode,
    parse,
    specified_rules,
)
from starlette.requests import Request
from starlette.responses import Response
from strawberry.http.parse_content_type import parse_content_type
from strawberry.schema.schema import validate_document

from aihub.domain.tokens import TokenKind
from aihub.graphql.errors import _not_cancelled_by_others
from aihub.graphql.guards import operation_cost
from aihub.graphql.prebuilt import NotPlain, Plan, plan_of
from aihub.graphql.runs import run_by_id
from aihub.graphql.types.common import parse_id
from aihub.services.tokens import check_run_token_operation

if TYPE_CHECKING:
    from aihub.graphql.context import Context
    from aihub.graphql.view import GraphQLView

#: root fields answered here: name -> (its ID argument, resolver(context, id) -> object or None)
ROOTS: dict[str, tuple[str, Callable[[Context, str], Awaitable[Any]]]] = {"run": ("id", run_by_id)}
#: documents remembered (simple or not), like the generic path's parser and validation caches
CACHED_DOCUMENTS = 256
#: longer documents are not looked at (a simple one is far shorter): a stream of unique large documents costs
#: no second parse here
MAX_SIMPLE_CHARS = 1000
#: off: every request takes the generic path (the tests compare both)
ENABLED = True
_ALLOWED_KEYS = frozenset({"query", "variables", "operationName"})


class RootPlan:
    """A simple document: its one root field, how to find its id, and the plan of its sub-selection."""

    __slots__ = ("argument", "key", "literal", "name", "operation_name", "plan", "resolve", "variable")

    def __init__(
        self,
        name: str,
        key: str,
        operation_name: str | None,
        variable: str | None,
        literal: str | None,
        plan: Plan,
    ) -> None:
        self.name = name
        self.key = key
        self.operation_name = operation_name
        self.variable = variable
        self.literal = literal
        self.plan = plan
        self.argument, self.resolve = ROOTS[name]


class FastQueries:
    """The simple-document plans of one schema, and the answers built from them; ``answered`` counts them."""

    def __init__(
        self,
        schema: Any,
        *,
        max_tokens: int,
        rules: list[Any],
        max_cost: int,
        max_log_bytes: int,
    ) -> None:
        self.schema = schema
        self.max_tokens = max_tokens
        self.rules = (*specified_rules, *rules)
        self.max_cost = max_cost
        self.max_log_bytes = max_log_bytes
        self._plans: OrderedDict[str, RootPlan | None] = OrderedDict()
        id_type = schema._schema.get_type(GraphQLID.name)
        self.coerce_id: Callable[[Any], str] = (
            getattr(id_type, "coerce_input_value", None) or id_type.parse_value
        )
        self._streams: dict[str, bool] = {}
        self.answered = 0

    # -------------------------------------------------------------------------------------------- planning

    def plan_for(self, query: str) -> RootPlan | None:
        try:
            plan = self._plans[query]
        except KeyError:
            pass
        else:
            self._plans.move_to_end(query)
            return plan
        if len(query) > MAX_SIMPLE_CHARS or not any(name in query for name in ROOTS):
            return None  # cannot be simple: not parsed here as well as on the generic path
        try:
            plan = self._plan(query)
        except (GraphQLError, NotPlain):
            plan = None
        self._plans[query] = plan
        if len(self._plans) > CACHED_DOCUMENTS:
            self._plans.popitem(last=False)
        return plan

    def _plan(self, query: str) -> RootPlan | None:
        graphql_schema = self.schema._schema
        document = parse(query, max_tokens=self.max_tokens)
        if validate_document(graphql_schema, document, self.rules):
            return None
        operation = _single_query(document)
        if operation is None:
            return None
        points, log_bytes = operation_cost(graphql_schema, document, operation, {})
        if points > self.max_cost or log_bytes > self.max_log_bytes:
            return None
        (node,) = operation.selection_set.selections
        if not isinstance(node, FieldNode) or node.directives or node.name.value not in ROOTS:
            return None
        argument_name = ROOTS[node.name.value][0]
        if len(node.arguments) != 1 or node.arguments[0].name.value != argument_name:
            return None
        value = node.arguments[0].value
        variable = literal = None
        if isinstance(value, VariableNode):
            if len(operation.variable_definitions) != 1:
                return None
            definition = operation.variable_definitions[0]
            type_ = definition.type
            if (
                definition.directives
                or definition.default_value is not None
                or not isinstance(type_, NonNullTypeNode)
                or not isinstance(type_.type, NamedTypeNode)
                or type_.type.name.value != GraphQLID.name
            ):
                return None
            variable = value.name.value
        elif isinstance(value, StringValueNode | IntValueNode) and not operation.variable_definitions:
            literal = value.value
        else:
            return None
        root_type = graphql_schema.query_type
        field = root_type.fields[node.name.value]
        if isinstance(field.type, GraphQLNonNull) or not isinstance(field.type, GraphQLObjectType):
            return None  # a nullable object: what ROOTS resolve to
        if node.selection_set is None:
            return None
        return RootPlan(
            node.name.value,
            node.alias.value if node.alias else node.name.value,
            operation.name.value if operation.name else None,
            variable,
            literal,
            plan_of(node.selection_set, field.type, {}),
        )

    # -------------------------------------------------------------------------------------------- answering

    async def answer(self, view: GraphQLView, request: Request) -> Response | None:
        """The response to a simple document's request, or None: the generic path answers it."""
        headers = request.headers
        if not ENABLED or not _is_json(headers.get("content-type") or ""):
            return None
        accept = headers.get("accept") or ""
        streams = self._streams.get(accept)
        if streams is None:
            # the generic path would stream the answer (multipart, SSE): remembered per header value
            streams = view._get_stream_transport_from_headers({"accept": accept}) is not None
            if len(self._streams) < 64:
                self._streams[accept] = streams
        if streams:
            return None
        body = await request.body()
        try:
            data = json.loads(body)
        except ValueError:
            return None
        if type(data) is not dict or not data.keys() <= _ALLOWED_KEYS:
            return None
        query, variables = data.get("query"), data.get("variables")
        if type(query) is not str or not (variables is None or type(variables) is dict):
            return None
        plan = self.plan_for(query)
        if plan is None:
            return None
        operation_name = data.get("operationName")
        if operation_name is not None and operation_name != plan.operation_name:
            return None
        if plan.variable is None:
            id_ = plan.literal
        else:
            given = variables.get(plan.variable) if variables else None
            if given is None:
                return None  # missing or null: the generic path refuses it
            try:
                id_ = self.coerce_id(given)  # the ID type's own input coercion (a number: its digits)
            except (GraphQLError, TypeError, ValueError):
                return None
        sub_response = await view.get_sub_response(request)
        context: Context = await view.get_context(request, sub_response)
        try:
            row = context.token_row
            if row is not None and row.kind is TokenKind.RUN:
                check_run_token_operation(row, plan.name, parse_id(id_ or "", plan.argument))
            found = await _not_cancelled_by_others(plan.resolve(context, id_))  # type: ignore[arg-type]
            value = None if found is None else plan.plan.build(found)
        except Exception:  # an error answer: the generic path makes it (and logs what it must)
            return None
        metrics = getattr(getattr(getattr(request, "app", None), "state", None), "metrics", None)
        if metrics is not None:
            label = metrics.operation_label(operation_name or plan.operation_name)
            metrics.labelled(metrics.graphql, "query", label).inc()
        self.answered += 1
        return view.create_response({"data": {plan.key: value}}, sub_response)


_JSON_TYPES: dict[str, bool] = {}


def _is_json(content_type: str) -> bool:
    """Whether the generic path reads the body as JSON (``parse_content_type``, remembered per header value)."""
    known = _JSON_TYPES.get(content_type)
    if known is None:
        known = "application/json" in parse_content_type(content_type)[0]
        if len(_JSON_TYPES) < 64:
            _JSON_TYPES[content_type] = known
    return known


def _single_query(document: DocumentNode) -> OperationDefinitionNode | None:
    if len(document.definitions) != 1:
        return None
    operation = document.definitions[0]
    if (
        not isinstance(operation, OperationDefinitionNode)
        or operation.operation is not OperationType.QUERY
        or operation.directives
        or len(operation.selection_set.selections) != 1
    ):
        return None
    return operation
