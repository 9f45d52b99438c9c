"""The PostgreSQL databases the benchmarks make for themselves (and drop afterwards)."""

from __future__ import annotations

import os

#: The server the benchmarks create their databases on (its own database is only connected to).
POSTGRES_URL = os.environ.get(
    "ENTITLEMENTS_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)

_ADMIN_URL = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")


async def fresh_postgres_database(name: str = "entitlements_bench") -> str | None:
    """A new empty database `name` (dropped first if there), or None without PostgreSQL."""
    import asyncpg  # type: ignore[import-untyped]

    try:
        connection = await asyncpg.connect(_ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await connection.execute(f"CREATE DATABASE {name}")
    finally:
        await connection.close()
    return POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"


async def drop_postgres_database(url: str) -> None:
    """Drop the database of `url` (or the one named `url`)."""
    import asyncpg

    name = url.rsplit("/", 1)[-1]
    connection = await asyncpg.connect(_ADMIN_URL)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await connection.close()
