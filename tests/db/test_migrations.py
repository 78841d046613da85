"""The one migration set builds, on SQLite and on PostgreSQL, exactly the schema the models describe."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from tortoise.connection import get_connection
from tortoise.context import TortoiseContext
from tortoise.transactions import in_transaction

from aihub.db.setup import MIGRATIONS_DIR, database_config, migrate, migrations_dir
from aihub.engine.attempts import cache_source
from aihub.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _migration_files() -> list[str]:
    return sorted(p.name for p in migrations_dir().glob("*.py") if p.name[0].isdigit())


async def _schema_from_models(settings: Settings, introspect) -> dict:
    """The schema Tortoise itself creates for the models, in a fresh database of the same backend."""
    async with TortoiseContext() as ctx:
        await ctx.init(config=database_config(settings))
        await ctx.generate_schemas(safe=False)
        return await introspect(ctx.db())


async def test_migrate_applies_every_migration_once(settings: Settings) -> None:
    assert await migrate(settings) == _migration_files()
    assert await migrate(settings) == []


async def test_migrated_schema_matches_the_models(
    db: Settings, new_database_url, db_backend, introspect
) -> None:
    """A model change without a migration makes the migrated schema differ from the models' own."""
    reference = Settings(data_dir=db.data_dir, database_url=await new_database_url(db_backend))
    expected = await _schema_from_models(reference, introspect)
    migrated = await introspect(get_connection("default"))
    assert set(migrated) == set(expected)
    for table in expected:
        assert migrated[table] == expected[table], table


async def test_schema_comparison_sees_a_missing_column(
    db: Settings, new_database_url, db_backend, introspect
) -> None:
    """Guards the test above against comparing nothing: an extra column is a difference."""
    reference = Settings(data_dir=db.data_dir, database_url=await new_database_url(db_backend))
    expected = await _schema_from_models(reference, introspect)
    await get_connection("default").execute_script('ALTER TABLE "run" ADD COLUMN "not_in_models" VARCHAR(20)')
    migrated = await introspect(get_connection("default"))
    assert migrated["run"]["columns"].keys() - expected["run"]["columns"].keys() == {"not_in_models"}


CACHE_INDEX = "idx_node_run_cache_k_e6f03c"


async def test_schema_comparison_sees_a_lost_index_condition(
    db: Settings, new_database_url, db_backend, introspect
) -> None:
    """Guards the comparison of indexes: the cache-key index made again without its ``WHERE`` is a difference,
    and the condition is what differs."""
    reference = Settings(data_dir=db.data_dir, database_url=await new_database_url(db_backend))
    expected = {i[0]: i for i in (await _schema_from_models(reference, introspect))["node_run"]["indexes"]}
    await get_connection("default").execute_script(
        f'DROP INDEX "{CACHE_INDEX}"; CREATE INDEX "{CACHE_INDEX}" ON "node_run" ("cache_key", "status")'
    )
    migrated = {i[0]: i for i in (await introspect(get_connection("default")))["node_run"]["indexes"]}
    assert "cache_key" in expected[CACHE_INDEX][3] and "NOT NULL" in expected[CACHE_INDEX][3]
    assert migrated[CACHE_INDEX][3] is None
    assert migrated[CACHE_INDEX][:3] == expected[CACHE_INDEX][:3]


async def test_the_cache_lookup_uses_the_partial_index(db: Settings, db_backend: str) -> None:
    """The index holds only rows with a cache key; the engine's lookup (``cache_key = ?``) still finds them
    through it, on both databases (PostgreSQL told not to scan the table, which it would for so few rows)."""
    sql = cache_source("0" * 64, 1).sql(params_inline=True)
    async with in_transaction() as conn:
        if db_backend == "postgres":
            await conn.execute_script("SET LOCAL enable_seqscan = off")
            plan = [row["QUERY PLAN"] for row in await conn.execute_query_dict(f"EXPLAIN {sql}")]
        else:
            plan = [row["detail"] for row in await conn.execute_query_dict(f"EXPLAIN QUERY PLAN {sql}")]
    assert any(CACHE_INDEX in line for line in plan), plan


def test_models_match_the_last_migration_state() -> None:
    """aerich's own diff (as `aerich migrate` runs it) finds nothing to migrate, for both dialects."""
    result = subprocess.run(
        [sys.executable, str(MIGRATIONS_DIR / "make_migration.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "migrations match the models" in result.stdout


async def test_concurrent_migrations_apply_each_file_once(settings: Settings, tmp_path: Path) -> None:
    """A server and a CLI migrating a fresh database together must not both run the same migration."""
    env = {
        "PATH": "/usr/bin:/bin",
        "AIHUB_DATA_DIR": str(tmp_path / "cli"),
        "AIHUB_DATABASE_URL": settings.database_url,
    }
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "aihub.cli",
            "migrate",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    outputs = [await proc.communicate() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], outputs
    async with TortoiseContext() as ctx:
        await ctx.init(config=database_config(settings))
        rows = await ctx.db().execute_query_dict("SELECT version FROM aerich ORDER BY id")
    assert [row["version"] for row in rows] == _migration_files()
