"""Migration 0010 (manual billing, audit request ids): it upgrades with data in place, and
downgrades back to 0009 and up again."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import inspect, pool, text
from sqlalchemy.engine import Connection

from entitlements.store.engine import create_engine
from entitlements.store.migrate import alembic_config, current_revision, head_revision, upgrade
from entitlements.store.models import Base
from tests.store.test_migrations import schema_differences


async def _downgrade(url: str, revision: str) -> None:
    def run(connection: Connection) -> None:
        command.downgrade(alembic_config(connection), revision)

    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run)
    finally:
        await engine.dispose()


async def _shape(url: str) -> tuple[set[str], set[str], set[str]]:
    def read(connection: Connection) -> tuple[set[str], set[str], set[str]]:
        inspector = inspect(connection)
        return (
            set(inspector.get_table_names()),
            {c["name"] for c in inspector.get_columns("subscriptions")},
            {c["name"] for c in inspector.get_columns("override_audit")},
        )

    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(read)
    finally:
        await engine.dispose()


async def test_0010_upgrades_a_0009_database_with_rows_and_downgrades_back(
    database_url: str,
) -> None:
    await upgrade(database_url, "0009")
    engine = create_engine(database_url, poolclass=pool.NullPool)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO override_audit (account_id, actor, action, details, created_at)"
                    " VALUES ('ws-1', 'ops', 'set_overrides', '{}', :now)"
                ),
                {"now": now if "postgres" in database_url else now.replace(tzinfo=None)},
            )
    finally:
        await engine.dispose()

    await upgrade(database_url)
    assert await current_revision(database_url) == head_revision()
    tables, sub_columns, audit_columns = await _shape(database_url)
    assert "manual_invoices" in tables
    assert {"price_cents", "currency"} <= sub_columns
    assert "request_id" in audit_columns
    assert await schema_differences(database_url, Base.metadata) == []

    await _downgrade(database_url, "0009")
    assert await current_revision(database_url) == "0009"
    tables, sub_columns, audit_columns = await _shape(database_url)
    assert "manual_invoices" not in tables
    assert not {"price_cents", "currency"} & sub_columns
    assert "request_id" not in audit_columns
    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            kept = (await connection.execute(text("SELECT count(*) FROM override_audit"))).scalar()
    finally:
        await engine.dispose()
    assert kept == 1  # the audit log survives the round trip

    await upgrade(database_url)
    assert await schema_differences(database_url, Base.metadata) == []
