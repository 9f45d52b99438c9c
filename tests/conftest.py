"""Fixtures for the whole suite: a database per test (SQLite file or fresh PostgreSQL database)
and a migrated `Store` on it.

PostgreSQL comes from ENTITLEMENTS_TEST_POSTGRES_URL (default
postgresql+asyncpg://postgres@127.0.0.1:5432/test); its tests are skipped when it cannot be
reached, unless ENTITLEMENTS_REQUIRE_POSTGRES=1 (as in CI), which makes them fail instead.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from entitlements.store.engine import create_engine, normalize_url, safe_url
from entitlements.store.migrate import upgrade
from entitlements.store.repository import Store
from tests.events.receiver import Receiver

POSTGRES_URL = normalize_url(
    os.environ.get(
        "ENTITLEMENTS_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    )
)
REQUIRE_POSTGRES = os.environ.get("ENTITLEMENTS_REQUIRE_POSTGRES") == "1"


class PostgresServer:
    """The test PostgreSQL server: reached once per session, one throwaway database per test."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._admin: AsyncEngine | None = None
        self._error: str | None = None
        self._checked = False

    async def create_database(self) -> str:
        """The URL of a new empty database."""
        admin = await self._reachable_admin()
        name = f"ent_test_{secrets.token_hex(6)}"
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    async def drop_database(self, url: str) -> None:
        if self._admin is None:
            return
        async with self._admin.connect() as connection:
            # FORCE ends connections a test may have leaked, so the drop cannot hang.
            name = make_url(url).database
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.dispose()

    async def _reachable_admin(self) -> AsyncEngine:
        if not self._checked:
            self._checked = True
            # CREATE/DROP DATABASE cannot run inside a transaction.
            admin = create_engine(self.url, isolation_level="AUTOCOMMIT")
            try:
                async with admin.connect() as connection:
                    await connection.execute(text("SELECT 1"))
            except Exception as error:
                await admin.dispose()
                self._error = f"{type(error).__name__}: {error}"
            else:
                self._admin = admin
        if self._admin is None:
            message = (
                f"PostgreSQL not reachable at {safe_url(self.url)}: {self._error}; "
                "set ENTITLEMENTS_TEST_POSTGRES_URL or start it"
            )
            if REQUIRE_POSTGRES:
                pytest.fail(f"{message} (ENTITLEMENTS_REQUIRE_POSTGRES=1)")
            pytest.skip(message)
        return self._admin


@pytest.fixture(scope="session")
async def postgres_server() -> AsyncIterator[PostgresServer]:
    """The PostgreSQL server; connects lazily, so a run without PostgreSQL tests never tries."""
    server = PostgresServer(POSTGRES_URL)
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_server: PostgresServer
) -> AsyncIterator[str]:
    """The URL of an empty database of its own for one test, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'entitlements.db'}"
        return
    url = await postgres_server.create_database()
    try:
        yield url
    finally:
        await postgres_server.drop_database(url)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """A Store on a migrated database of its own."""
    await upgrade(database_url)
    opened = Store.open(database_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real HTTP receiver of outbound events (tests/events/receiver.py), started and stopped."""
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()
