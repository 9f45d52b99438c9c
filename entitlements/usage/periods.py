"""UTC calendar-month periods ("YYYY-MM") of monthly metrics."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from entitlements.errors import InvalidArgument

_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def period_of(ms: int) -> str:
    """The UTC month of a unix-milliseconds instant."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return f"{moment.year:04d}-{moment.month:02d}"


def current_period(now: datetime) -> str:
    now = now.astimezone(UTC)
    return f"{now.year:04d}-{now.month:02d}"


def parse_period(value: str, field: str) -> str:
    """A "YYYY-MM" period from a request, or INVALID_ARGUMENT naming `field`."""
    if not _PERIOD.match(value):
        raise InvalidArgument(field, f"expected a month as YYYY-MM, got {value!r}")
    return value
