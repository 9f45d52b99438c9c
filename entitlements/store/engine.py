"""Database URLs and engines: SQLite (aiosqlite) by default, PostgreSQL (asyncpg) in production."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from entitlements.observability.tracing import instrument_engine

__all__ = [
    "DEFAULT_DATABASE_URL",
    "IMMEDIATE",
    "create_engine",
    "is_postgres",
    "is_sqlite",
    "normalize_url",
    "safe_url",
]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///entitlements.db"

#: Execution option for a transaction that will write: on SQLite it begins with BEGIN IMMEDIATE,
#: taking the write lock up front (waiting up to busy_timeout) instead of failing with "database is
#: locked" when a read inside the transaction is followed by a write. Ignored on PostgreSQL.
IMMEDIATE = "entitlements_begin_immediate"

_SQLITE_DRIVERS = {"sqlite": "sqlite+aiosqlite", "sqlite+aiosqlite": "sqlite+aiosqlite"}
_POSTGRES_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout=5000",
    # FULL syncs the WAL on every commit, so an acknowledged write survives kill -9 and power
    # loss (NORMAL would only survive the former).
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
)
_POSTGRES_CONNECT_TIMEOUT_S = 10.0
_WAL_SWITCH_ATTEMPTS = 10


def normalize_url(url: str | URL) -> str:
    """Return `url` with its async driver: `postgres://` and `postgresql://` become
    `postgresql+asyncpg://`, `sqlite:///x` becomes `sqlite+aiosqlite:///x`.

    Raises ValueError for anything that is not SQLite or PostgreSQL.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {_mask(str(url))!r}") from exc
    driver = _SQLITE_DRIVERS.get(parsed.drivername) or _POSTGRES_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"unsupported database URL {safe_url(parsed)!r}: use sqlite+aiosqlite:///<path> "
            "or postgresql+asyncpg://<user>@<host>/<database>"
        )
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def safe_url(url: str | URL) -> str:
    """`url` with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return _mask(str(url))


def create_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """An AsyncEngine for `url` (normalized first), with the project's connection settings."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(parsed, **kwargs)
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
    else:
        connect_args = {"timeout": _POSTGRES_CONNECT_TIMEOUT_S, **kwargs.pop("connect_args", {})}
        engine = create_async_engine(
            parsed, pool_pre_ping=True, connect_args=connect_args, **kwargs
        )
    instrument_engine(engine)  # spans for writes when tracing is on; nothing otherwise
    return engine


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def _on_sqlite_connect(dbapi_connection: Any, _connection_record: Any) -> None:
    # sqlite3's legacy mode emits BEGIN only before DML, so SELECTs in a transaction would not
    # share a snapshot; turn it off and let _on_sqlite_begin emit BEGIN (SQLAlchemy's recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        _use_wal(cursor)
    finally:
        cursor.close()


def _use_wal(cursor: Any) -> None:
    """Put the file in WAL mode (it stays so): readers then run while one writer commits."""
    for attempt in range(_WAL_SWITCH_ATTEMPTS):
        cursor.execute("PRAGMA journal_mode")
        mode = cursor.fetchone()[0]
        if mode in ("wal", "memory"):  # an in-memory database has no WAL
            return
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.fetchone()
        except Exception as error:
            # Connections that open a new file together all try to switch it, and SQLite
            # answers SQLITE_BUSY at once, without waiting, to all but one: wait for that one.
            if not getattr(error, "sqlite_errorname", "").startswith("SQLITE_BUSY"):
                raise
            # The event hook cannot await; this blocks for milliseconds, once, on a new file.
            time.sleep(0.002 * (attempt + 1))
    raise RuntimeError("SQLite did not switch to WAL mode")


def _on_sqlite_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(IMMEDIATE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _mask(text: str) -> str:
    # Hide what could be a password in something make_url could not parse.
    scheme, sep, rest = text.partition("://")
    if sep and "@" in rest:
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return text
