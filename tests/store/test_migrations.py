"""Alembic migrations: they apply to a fresh database, again harmlessly, and match models.py."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, Column, Integer, MetaData, Table, inspect, pool
from sqlalchemy.engine import Connection

from entitlements.store.engine import create_engine
from entitlements.store.migrate import MIGRATIONS_DIR, current_revision, head_revision, upgrade
from entitlements.store.models import Base, exists_on


async def schema_differences(url: str, metadata: MetaData) -> list[Any]:
    def compare(connection: Connection) -> list[Any]:
        opts = {"compare_type": True, "include_object": exists_on(connection.dialect.name)}
        context = MigrationContext.configure(connection, opts=opts)
        return list(compare_metadata(context, metadata))

    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(compare)
    finally:
        await engine.dispose()


async def test_fresh_database_has_no_revision(database_url: str) -> None:
    assert await current_revision(database_url) is None


async def test_upgrade_applies_to_a_fresh_database_and_again_changes_nothing(
    database_url: str,
) -> None:
    await upgrade(database_url)
    assert await current_revision(database_url) == head_revision()

    await upgrade(database_url)

    assert await current_revision(database_url) == head_revision()
    assert await schema_differences(database_url, Base.metadata) == []


async def test_migrated_schema_matches_the_models(database_url: str) -> None:
    await upgrade(database_url)

    assert await schema_differences(database_url, Base.metadata) == []


async def test_migrated_check_constraints_and_server_defaults_match_the_models(
    database_url: str,
) -> None:
    # compare_metadata looks at neither, so check them by name.
    def reflect(connection: Connection) -> dict[str, Any]:
        inspector = inspect(connection)

        def primary_keys(table: str) -> list[str]:
            # PostgreSQL reports a SERIAL key's nextval() as a default.
            return list(inspector.get_pk_constraint(table)["constrained_columns"])

        return {
            table: (
                sorted(c["name"] for c in inspector.get_check_constraints(table)),
                sorted(
                    c["name"]
                    for c in inspector.get_columns(table)
                    if c["default"] is not None and c["name"] not in primary_keys(table)
                ),
            )
            for table in Base.metadata.tables
        }

    await upgrade(database_url)
    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            reflected = await connection.run_sync(reflect)
    finally:
        await engine.dispose()

    expected = {
        name: (
            sorted(str(c.name) for c in table.constraints if isinstance(c, CheckConstraint)),
            sorted(c.name for c in table.columns if c.server_default is not None),
        )
        for name, table in Base.metadata.tables.items()
    }
    assert reflected == expected


async def test_schema_comparison_would_notice_a_model_the_migrations_lack(
    database_url: str,
) -> None:
    await upgrade(database_url)
    extended = MetaData()
    for table in Base.metadata.tables.values():
        copied = table.to_metadata(extended)
        # `to_metadata` drops an index's `ddl_if` (the indexes made on one database only).
        conditions = {i.name: i._ddl_if for i in table.indexes if i._ddl_if is not None}
        for index in copied.indexes:
            if index.name in conditions:
                index.ddl_if(dialect=conditions[index.name].dialect)
    Table("not_migrated", extended, Column("id", Integer, primary_key=True))

    differences = await schema_differences(database_url, extended)

    assert [d[0] for d in differences] == ["add_table"]


async def test_concurrent_upgrades_take_turns(database_url: str) -> None:
    await asyncio.gather(*(upgrade(database_url) for _ in range(3)))

    assert await current_revision(database_url) == head_revision()


def test_migrations_ship_inside_the_package() -> None:
    shipped = {p.relative_to(MIGRATIONS_DIR).as_posix() for p in MIGRATIONS_DIR.rglob("*")}
    assert {"env.py", "script.py.mako", "versions/0001_initial.py"} <= shipped
    files = list((MIGRATIONS_DIR / "versions").glob("[0-9]*.py"))
    # A revision id is the file's number ("0006") or its whole stem.
    versions = {p.name.split("_", 1)[0] for p in files} | {p.stem for p in files}
    # Every shipped migration is reached by `upgrade`: the heads name the newest of each line.
    assert set(head_revision().split("+")) <= versions


def test_migrations_form_one_line() -> None:
    # Branches (two heads) would let replicas of different builds disagree on the schema.
    assert "+" not in head_revision()
