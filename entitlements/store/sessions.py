"""What every repository shares: one session per call, write transactions that take SQLite's
write lock at BEGIN, and a down database raised as `entitlements.errors.Unavailable`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from entitlements.store.engine import IMMEDIATE, is_postgres
from entitlements.store.failures import translate_errors

__all__ = ["Sessions"]


class Sessions:
    """Base of the repositories: each method opens its own session and transaction, so an
    instance may be shared by concurrent tasks."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._reads = async_sessionmaker(engine, expire_on_commit=False)
        # On SQLite a writing transaction takes the write lock at BEGIN (waiting up to
        # busy_timeout) rather than failing with "database is locked" half way through.
        self._writes = async_sessionmaker(
            engine.execution_options(**{IMMEDIATE: True}), expire_on_commit=False
        )

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @asynccontextmanager
    async def _transaction(self, *, write: bool = False) -> AsyncIterator[AsyncSession]:
        sessions = self._writes if write else self._reads
        with translate_errors(self._engine.url):
            async with sessions() as session, session.begin():
                yield session

    def _insert(self, entity: Any) -> postgresql.Insert | sqlite.Insert:
        # INSERT ... ON CONFLICT has the same shape on both backends, but each has its own class.
        return postgresql.insert(entity) if is_postgres(self._engine) else sqlite.insert(entity)
