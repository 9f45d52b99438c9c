"""Database URLs and the engine's connection settings."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from entitlements.store.engine import (
    DEFAULT_DATABASE_URL,
    create_engine,
    is_postgres,
    normalize_url,
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/ent", "postgresql+asyncpg://u:p@db:5432/ent"),
        ("postgres://u@db/ent", "postgresql+asyncpg://u@db/ent"),
        ("postgresql+asyncpg://u@db/ent", "postgresql+asyncpg://u@db/ent"),
        ("sqlite:///entitlements.db", "sqlite+aiosqlite:///entitlements.db"),
        ("sqlite:////var/lib/ent.db", "sqlite+aiosqlite:////var/lib/ent.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        (DEFAULT_DATABASE_URL, "sqlite+aiosqlite:///entitlements.db"),
    ],
)
def test_normalize_url_selects_the_async_driver(given: str, expected: str) -> None:
    assert normalize_url(given) == expected


@pytest.mark.parametrize(
    "given",
    ["mysql://u@db/ent", "postgresql+psycopg2://u@db/ent", "oracle://db", "not a url", ""],
)
def test_normalize_url_rejects_other_databases(given: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        normalize_url(given)


def test_normalize_url_error_does_not_show_the_password() -> None:
    with pytest.raises(ValueError) as raised:
        normalize_url("mysql://user:s3cret@db/ent")
    assert "s3cret" not in str(raised.value)


async def test_sqlite_connections_are_durable_wal_with_foreign_keys(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'ent.db'}")
    try:
        async with engine.connect() as connection:

            async def pragma(name: str) -> object:
                return (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar_one()

            assert await pragma("journal_mode") == "wal"
            assert await pragma("synchronous") == 2  # FULL
            assert await pragma("foreign_keys") == 1
            assert await pragma("busy_timeout") == 5000
    finally:
        await engine.dispose()


async def test_sqlite_file_is_left_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "ent.db"
    engine = create_engine(f"sqlite:///{path}")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (x INTEGER)"))
    finally:
        await engine.dispose()
    with sqlite3.connect(path) as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    plain.close()


async def test_is_postgres_tells_the_backends_apart(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        assert is_postgres(engine) == database_url.startswith("postgresql+asyncpg://")
    finally:
        await engine.dispose()
