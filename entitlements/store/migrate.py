"""Apply the alembic migrations shipped in this package, from code (`entitlements migrate`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection

from entitlements.store.engine import IMMEDIATE, create_engine, is_postgres
from entitlements.store.failures import translate_errors

__all__ = ["MIGRATIONS_DIR", "alembic_config", "current_revision", "head_revision", "upgrade"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Any fixed number: replicas that start together take turns instead of racing through DDL.
_MIGRATION_LOCK_ID = 0x656E7469746C  # "entitl"


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic Config for the packaged migrations; no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def upgrade(url: str, revision: str = "heads") -> None:
    """Migrate the database at `url` to `revision`; running it again changes nothing.

    Raises Unavailable if the database cannot be reached.
    """
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with translate_errors(engine.url):
            # One transaction: PostgreSQL's DDL is transactional and SQLite's is too with the
            # engine's explicit BEGIN, so a failed migration leaves nothing half done.
            async with engine.execution_options(**{IMMEDIATE: True}).begin() as connection:
                if is_postgres(engine):
                    await connection.execute(
                        text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID}
                    )
                await connection.run_sync(_upgrade, revision)
    finally:
        await engine.dispose()


async def current_revision(url: str) -> str | None:
    """The revision the database at `url` is at ("a+b" when several branches are applied), None
    if it was never migrated."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with translate_errors(engine.url):
            async with engine.connect() as connection:
                return await connection.run_sync(_current_revision)
    finally:
        await engine.dispose()


def head_revision() -> str:
    """The newest revision(s) the packaged migrations lead to, as `current_revision` spells them."""
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if not heads:  # pragma: no cover - the package always ships migrations
        raise RuntimeError(f"no migrations in {MIGRATIONS_DIR}")
    return "+".join(sorted(heads))


def _upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)


def _current_revision(connection: Connection) -> str | None:
    heads = MigrationContext.configure(connection).get_current_heads()
    return "+".join(sorted(heads)) if heads else None
