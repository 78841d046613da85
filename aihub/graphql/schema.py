"""The schema: per-area operation classes merged into ``Query``, ``Mutation`` and ``Subscription``.

An area adds itself by appending its classes to the tuples below (module mutations: ``aihub.graphql.modules``).
Limits are on for every operation: query depth, tokens and aliases; operation batching stays off (Strawberry's
default).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaxTokensLimiter,
    ParserCache,
    SchemaExtension,
    ValidationCache,
)
from strawberry.extensions.context import StreamResultContextManager
from strawberry.extensions.max_aliases import create_validator as aliases_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_rule
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext
from strawberry.utils.await_maybe import await_maybe

from aihub.graphql.admin import AdminMutation, AdminQuery
from aihub.graphql.auth import AuthMutation, AuthQuery
from aihub.graphql.catalog import CatalogQuery
from aihub.graphql.errors import ErrorCodes, GuardResolvers, add_codes, request_id_of
from aihub.graphql.fastpath import FastQueries
from aihub.graphql.guards import QueryCost, RunTokenScope
from aihub.graphql.live import LiveSubscription
from aihub.graphql.loaders import Loaders
from aihub.graphql.metrics import OperationMetrics
from aihub.graphql.prebuilt import FastExecutionContext
from aihub.graphql.runs import RunMutation, RunQuery
from aihub.graphql.workflows import WorkflowMutation, WorkflowQuery

log = logging.getLogger("aihub.graphql")

QUERIES: tuple[type, ...] = (AuthQuery, WorkflowQuery, RunQuery, AdminQuery, CatalogQuery)
MUTATIONS: tuple[type, ...] = (AuthMutation, WorkflowMutation, RunMutation, AdminMutation)
SUBSCRIPTIONS: tuple[type, ...] = (LiveSubscription,)

#: optional areas: ``module`` -> classes named ``<Prefix>Query`` / ``Mutation`` / ``Subscription`` if present
OPTIONAL_AREAS = {"aihub.graphql.modules": "Module"}

MAX_DEPTH = 12
MAX_TOKENS = 5000
MAX_ALIASES = 30
#: the default budgets of one operation (``aihub.graphql.guards``; ``AIHUB_MAX_QUERY_COST``, ``AIHUB_MAX_QUERY_LOG_BYTES``)
MAX_COST = 1_000_000
MAX_QUERY_LOG_BYTES = 64 * 1024**2
#: parsed and validated documents kept (bounded: unique query texts must not grow memory)
CACHED_DOCUMENTS = 256


class FreshLoaders(SchemaExtension):
    """New DataLoaders for every operation (a websocket connection shares one context between operations)."""

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context.context
        context.loaders = Loaders(context.user)
        yield


class LeanExtensionsRunner(SchemaExtensionsRunner):
    """Strawberry's runner without the calls that do nothing, which a live event paid for every subscriber:
    results are asked only of the extensions that give some, and the per-result hook sees only the extensions
    that have it (issue 18)."""

    def __init__(self, execution_context: ExecutionContext, extensions: list[SchemaExtension]) -> None:
        super().__init__(execution_context, extensions)
        self._with_results = [e for e in extensions if _overrides(e, "get_results")]
        self._on_result = [e for e in extensions if _overrides(e, "on_stream_result")]

    def on_stream_result(self, result: Any) -> StreamResultContextManager:
        return StreamResultContextManager(self._on_result, result)

    async def get_extensions_results(self, ctx: ExecutionContext) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for extension in self._with_results:
            data.update(await await_maybe(extension.get_results()))
        data.update(ctx.extensions_results)
        return data


def _overrides(extension: SchemaExtension, hook: str) -> bool:
    return getattr(type(extension), hook) is not getattr(SchemaExtension, hook)


class AIHubSchema(strawberry.Schema):
    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        return LeanExtensionsRunner(execution_context, extensions)

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Expected errors (bad input, not found, limits) are answers, not server problems: no traceback.
        Unexpected ones are logged with the request id, then masked (``aihub.graphql.errors``)."""
        add_codes(errors, request_id_of(execution_context.context if execution_context else None))


def _areas() -> tuple[list[type], list[type], list[type]]:
    queries, mutations, subscriptions = list(QUERIES), list(MUTATIONS), list(SUBSCRIPTIONS)
    for module_name, prefix in OPTIONAL_AREAS.items():
        try:
            module: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        for target, suffix in ((queries, "Query"), (mutations, "Mutation"), (subscriptions, "Subscription")):
            cls = getattr(module, prefix + suffix, None)
            if cls is not None:
                target.append(cls)
    return queries, mutations, subscriptions


def build_schema(
    *,
    max_depth: int = MAX_DEPTH,
    max_tokens: int = MAX_TOKENS,
    max_aliases: int = MAX_ALIASES,
    max_cost: int = MAX_COST,
    max_log_bytes: int = MAX_QUERY_LOG_BYTES,
) -> strawberry.Schema:
    queries, mutations, subscriptions = _areas()
    # The limit rules are built once, so that validation results can be cached per document (the cache key
    # includes the rule classes); parsing and validating dominate the cost of a small query otherwise.
    rules = [depth_rule(max_depth, None), aliases_rule(max_aliases)]
    schema = AIHubSchema(
        query=merge_types("Query", tuple(queries)),
        mutation=merge_types("Mutation", tuple(mutations)),
        subscription=merge_types("Subscription", tuple(subscriptions)),
        execution_context_class=FastExecutionContext,
        extensions=[
            lambda: MaxTokensLimiter(max_token_count=max_tokens),
            lambda: AddValidationRules(rules),
            lambda: ParserCache(maxsize=CACHED_DOCUMENTS),
            lambda: ValidationCache(maxsize=CACHED_DOCUMENTS),
            FreshLoaders,
            RunTokenScope,
            lambda: QueryCost(max_cost, max_log_bytes),
            ErrorCodes,
            GuardResolvers,
            OperationMetrics,
        ],
    )
    schema.fast_queries = FastQueries(  # type: ignore[attr-defined]
        schema, max_tokens=max_tokens, rules=rules, max_cost=max_cost, max_log_bytes=max_log_bytes
    )
    return schema
