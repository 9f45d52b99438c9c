"""Migration 0011 (usage keys on SQLite without the receipt-time index): it upgrades with key
rows in place, downgrades back to 0010 and up again, and keys stay counted once throughout."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect, pool, text
from sqlalchemy.engine import Connection

from entitlements.store.engine import create_engine
from entitlements.store.migrate import alembic_config, current_revision, head_revision, upgrade
from entitlements.store.models import Base
from tests.store.test_migrations import schema_differences

INDEX = "ix_usage_events_received_at_ms"


async def _downgrade(url: str, revision: str) -> None:
    def run(connection: Connection) -> None:
        command.downgrade(alembic_config(connection), revision)

    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run)
    finally:
        await engine.dispose()


async def _indexes_and_rows(url: str) -> tuple[set[str], list[tuple[str, str, int]]]:
    def indexes(connection: Connection) -> set[str]:
        return {str(i["name"]) for i in inspect(connection).get_indexes("usage_events")}

    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(indexes)
            rows = await connection.execute(
                text(
                    "SELECT account_id, idempotency_key, total FROM usage_events"
                    " ORDER BY idempotency_key"
                )
            )
            return names, [(a, k, t) for a, k, t in rows]
    finally:
        await engine.dispose()


async def test_0011_upgrades_a_0010_database_with_key_rows_and_downgrades_back(
    database_url: str,
) -> None:
    postgres = "postgres" in database_url
    await upgrade(database_url, "0010")
    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as connection:
            for i in range(3):
                await connection.execute(
                    text(
                        "INSERT INTO usage_events (account_id, idempotency_key, metric, delta,"
                        " period, total, occurred_at_ms, received_at_ms) VALUES"
                        " ('ws-1', :key, 'messages', 1, '2026-11', :total, 0, :received)"
                    ),
                    {"key": f"k{i}", "total": i + 1, "received": 1000 + i},
                )
    finally:
        await engine.dispose()
    rows = [("ws-1", f"k{i}", i + 1) for i in range(3)]

    await upgrade(database_url)
    assert await current_revision(database_url) == head_revision() == "0011"
    indexes, kept = await _indexes_and_rows(database_url)
    # PostgreSQL prunes through the index; SQLite walks rowids and saves its insert per event.
    assert (INDEX in indexes) is postgres
    assert kept == rows
    assert await schema_differences(database_url, Base.metadata) == []

    await _downgrade(database_url, "0010")
    assert await current_revision(database_url) == "0010"
    indexes, kept = await _indexes_and_rows(database_url)
    assert INDEX in indexes
    assert kept == rows

    await upgrade(database_url)
    indexes, kept = await _indexes_and_rows(database_url)
    assert (INDEX in indexes) is postgres
    assert kept == rows
    assert await schema_differences(database_url, Base.metadata) == []
