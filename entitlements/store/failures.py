"""Turning a database that cannot be reached into `entitlements.errors.Unavailable`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL

from entitlements.errors import Unavailable
from entitlements.store.engine import safe_url

__all__ = ["is_unavailable", "translate_errors"]


def is_unavailable(error: BaseException) -> bool:
    """True if `error` says the database is down, unreachable or too busy, not that a statement
    was wrong: the caller may retry later."""
    if isinstance(error, OSError):  # refused, reset, DNS, timeouts (TimeoutError is an OSError)
        return True
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return True
    # asyncpg raises its own errors from connect() (e.g. "the database system is starting up",
    # "too many connections"); SQLAlchemy wraps only those raised by statements.
    module = type(error).__module__
    return module.startswith("asyncpg") and _is_asyncpg_connection_error(error)


def _is_asyncpg_connection_error(error: BaseException) -> bool:
    import asyncpg

    return isinstance(
        error,
        asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError
        | asyncpg.InvalidCatalogNameError
        | asyncpg.InvalidAuthorizationSpecificationError,
    )


@contextmanager
def translate_errors(url: str | URL) -> Iterator[None]:
    """Re-raise a database-unavailable error from the block as `Unavailable`."""
    try:
        yield
    except Exception as error:
        if is_unavailable(error):
            raise Unavailable(
                f"database {safe_url(url)} unavailable: {type(error).__name__}: {error}"
            ) from error
        raise
