"""Schema introspection for the database tests: what tables, columns, indexes and constraints a live
database really has, in a form that compares equal between two databases built the same way."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from tortoise.backends.base.client import BaseDBAsyncClient

Schema = dict[str, dict[str, Any]]
Introspect = Callable[[BaseDBAsyncClient], Awaitable[Schema]]


async def _sqlite_schema(conn: BaseDBAsyncClient) -> Schema:
    rows = await conn.execute_query_dict(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    )
    schema: Schema = {}
    for table in (row["name"] for row in rows):
        columns = {
            c["name"]: (c["type"], bool(c["notnull"]), c["dflt_value"], c["pk"])
            for c in await conn.execute_query_dict(f'PRAGMA table_info("{table}")')
        }
        indexes = set()
        for index in await conn.execute_query_dict(f'PRAGMA index_list("{table}")'):
            info = await conn.execute_query_dict(f'PRAGMA index_info("{index["name"]}")')
            cols = tuple(c["name"] for c in sorted(info, key=lambda c: c["seqno"]))
            # auto-index names depend on declaration order only: keep the ones we chose
            name = None if index["name"].startswith("sqlite_autoindex") else index["name"]
            indexes.add((name, cols, bool(index["unique"]), await _sqlite_condition(conn, index)))
        foreign_keys = {
            (fk["from"], fk["table"], fk["to"], fk["on_delete"])
            for fk in await conn.execute_query_dict(f'PRAGMA foreign_key_list("{table}")')
        }
        schema[table] = {"columns": columns, "indexes": indexes, "constraints": foreign_keys}
    return schema


async def _sqlite_condition(conn: BaseDBAsyncClient, index: dict[str, Any]) -> str | None:
    """A partial index's condition (its ``WHERE``, as written), else None."""
    if not index["partial"]:
        return None
    rows = await conn.execute_query_dict("SELECT sql FROM sqlite_master WHERE name = ?", [index["name"]])
    return " ".join(rows[0]["sql"].partition(" WHERE ")[2].split())


async def _postgres_schema(conn: BaseDBAsyncClient) -> Schema:
    schema: Schema = {}
    for row in await conn.execute_query_dict(
        "SELECT table_name, column_name, data_type, character_maximum_length, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_schema = 'public'"
    ):
        table = schema.setdefault(row["table_name"], {"columns": {}, "indexes": set(), "constraints": set()})
        table["columns"][row["column_name"]] = (
            row["data_type"],
            row["character_maximum_length"],
            row["is_nullable"] == "NO",
            row["column_default"],
        )
    for row in await conn.execute_query_dict(
        "SELECT t.relname AS table_name, i.relname AS index_name, ix.indisunique AS is_unique,"
        " pg_get_expr(ix.indpred, ix.indrelid) AS condition,"
        " array(SELECT a.attname FROM unnest(ix.indkey) WITH ORDINALITY AS k(attnum, ord)"
        "       JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum ORDER BY k.ord) AS cols"
        " FROM pg_index ix JOIN pg_class t ON t.oid = ix.indrelid JOIN pg_class i ON i.oid = ix.indexrelid"
        " JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = 'public'"
    ):
        schema[row["table_name"]]["indexes"].add(
            (row["index_name"], tuple(row["cols"]), row["is_unique"], row["condition"])
        )
    for row in await conn.execute_query_dict(
        "SELECT c.conrelid::regclass::text AS table_name, c.conname, pg_get_constraintdef(c.oid) AS definition"
        " FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'public'"
    ):
        schema[row["table_name"].strip('"')]["constraints"].add((row["conname"], row["definition"]))
    return schema


async def introspect_schema(conn: BaseDBAsyncClient) -> Schema:
    dialect = conn.schema_generator.DIALECT
    if dialect == "sqlite":
        return await _sqlite_schema(conn)
    if dialect == "postgres":
        return await _postgres_schema(conn)
    raise NotImplementedError(dialect)


@pytest.fixture
def introspect() -> Introspect:
    """``await introspect(connection)`` -> ``{table: {"columns", "indexes", "constraints"}}``."""
    return introspect_schema
