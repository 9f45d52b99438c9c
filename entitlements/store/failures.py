"""Turning a database that cannot be reached into `entitlements.errors.Unavailable`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL

from entitlements.errors import Unavailable
from entitlements.observability.throttle import Throttle
from entitlements.store.engine import safe_url

__all__ = ["UNAVAILABLE_MESSAGE", "is_unavailable", "is_unstorable_value", "translate_errors"]

log = logging.getLogger(__name__)

#: What a caller is told when the database cannot be reached.
UNAVAILABLE_MESSAGE = "the database is unavailable; retry with backoff"

# During an outage every call fails alike: the log says so a few times a minute per database,
# not per call.
_throttles: dict[str, Throttle] = {}

# SQLite result codes that mean the file cannot be used right now, as opposed to SQLITE_ERROR
# (a bad statement, a missing table), which is a bug to surface rather than retry.
_SQLITE_UNAVAILABLE = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_CANTOPEN",
    "SQLITE_IOERR",
    "SQLITE_FULL",
    "SQLITE_READONLY",
    "SQLITE_PROTOCOL",
    "SQLITE_NOMEM",
)
# PostgreSQL SQLSTATE classes: connection exception, insufficient resources (too many
# connections, disk full), operator intervention (shutdown, starting up), bad credentials, and
# a database that does not exist (yet).
_POSTGRES_UNAVAILABLE = ("08", "53", "57P", "28", "3D000")


def is_unavailable(error: BaseException) -> bool:
    """True if `error` says the database is down, unreachable or too busy, rather than that a
    statement was wrong: the caller may retry later."""
    for cause in _causes(error):
        if isinstance(cause, OSError):  # refused, reset, DNS; TimeoutError is an OSError too
            return True
        if isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated:
            return True
        if isinstance(cause, sa_exc.InterfaceError | sa_exc.TimeoutError):
            return True
        sqlite_error = getattr(cause, "sqlite_errorname", None)
        if isinstance(sqlite_error, str):
            return sqlite_error.startswith(_SQLITE_UNAVAILABLE)
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_POSTGRES_UNAVAILABLE):
            return True
    # PostgreSQL's other OperationalErrors (statement timeouts, cancelled queries) are transient.
    return isinstance(error, sa_exc.OperationalError)


def is_unstorable_value(error: BaseException) -> bool:
    """True if `error` says a value handed to the database cannot be stored (PostgreSQL's data
    exceptions, SQLSTATE class 22: a NUL in text, a number out of range; the drivers' own
    refusals of a value, raised as ValueError or OverflowError before it is sent): the
    statement's input was wrong, not the database or the statement."""
    for cause in _causes(error):
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith("22"):
            return True
        if isinstance(cause, OverflowError):  # sqlite3: an int past 64 bits
            return True
        if isinstance(cause, ValueError) and type(cause).__module__.startswith("asyncpg"):
            return True  # asyncpg's DataError: "invalid input for query argument"
    return False


@contextmanager
def translate_errors(url: str | URL) -> Iterator[None]:
    """Re-raise a database-unavailable error from the block as `Unavailable`."""
    try:
        yield
    except Exception as error:
        if is_unavailable(error):
            cause = error.orig if isinstance(error, sa_exc.DBAPIError) else error
            where = safe_url(url)
            detail = f"database {where} unavailable: {type(cause).__name__}: {cause}"
            throttle = _throttles.get(where)
            if throttle is None:
                throttle = _throttles[where] = Throttle(burst=5, per_minute=6)
            held_back = throttle.allow()
            if held_back is not None:
                more = f" ({held_back} more not logged)" if held_back else ""
                log.warning("%s%s", detail, more)
            # Callers learn that the database is away, not where it is (user, host, port, name).
            raise Unavailable(UNAVAILABLE_MESSAGE, detail=detail) from error
        raise


def _causes(error: BaseException) -> Iterator[BaseException]:
    """`error`, the driver error SQLAlchemy wrapped and what they were raised from."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        pending.extend([orig if isinstance(orig, BaseException) else None, current.__cause__])
