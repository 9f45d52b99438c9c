"""Usage thresholds: how close a count is to its limit (75 % warn, 90 % upgrade prompt, 100 %)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from entitlements.errors import InvalidArgument


class UsageLevel(enum.IntEnum):
    """How close usage is to its limit; the values are the proto's `USAGE_LEVEL_*` numbers."""

    OK = 1
    WARNING = 2
    UPGRADE_PROMPT = 3
    EXCEEDED = 4


#: The percentage of the limit at which each level starts; EXCEEDED starts at the limit itself.
WARNING_PERCENT: Final = 75
UPGRADE_PROMPT_PERCENT: Final = 90

#: The levels that are thresholds a notification can report crossing, lowest first.
THRESHOLD_LEVELS: Final = (UsageLevel.WARNING, UsageLevel.UPGRADE_PROMPT, UsageLevel.EXCEEDED)

# Module-level aliases: enum attribute access is slow on Python 3.11, and this is the hot path.
_OK: Final = UsageLevel.OK
_WARNING: Final = UsageLevel.WARNING
_UPGRADE_PROMPT: Final = UsageLevel.UPGRADE_PROMPT
_EXCEEDED: Final = UsageLevel.EXCEEDED

_CROSSED: Final = {
    (low, high): tuple(level for level in THRESHOLD_LEVELS if low < level <= high)
    for low in UsageLevel
    for high in UsageLevel
}


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """A count judged against a limit; `allowed` means there is room for one more."""

    allowed: bool
    limit: int | None
    current: int
    percentage: float
    level: UsageLevel
    unlimited: bool
    remaining: int | None


def check_limit(limit: int | None, current: int) -> LimitCheck:
    """Judge `current` against `limit` (None = unlimited: always allowed, 0 %, OK)."""
    if current < 0:
        raise _negative("current", current)
    if limit is None:
        return LimitCheck(True, None, current, 0.0, _OK, True, None)
    if limit <= 0:
        if limit < 0:
            raise _negative("limit", limit)
        return LimitCheck(False, 0, current, 100.0, _EXCEEDED, False, 0)
    # 100 * current / limit divides exact integers once, so 8 of 10 is exactly 80.0.
    remaining = limit - current
    return LimitCheck(
        remaining > 0,
        limit,
        current,
        100 * current / limit,
        level_unchecked(current, limit),
        False,
        remaining if remaining > 0 else 0,
    )


def level_for(current: int, limit: int | None) -> UsageLevel:
    """The usage level of `current` against `limit`; a limit of 0 is always EXCEEDED."""
    if current < 0:
        raise _negative("current", current)
    if limit is not None and limit < 0:
        raise _negative("limit", limit)
    return level_unchecked(current, limit)


def crossed_levels(before: int, after: int, limit: int | None) -> tuple[UsageLevel, ...]:
    """The threshold levels newly reached when usage goes from `before` to `after`, lowest first."""
    for field, value in (("before", before), ("after", after), ("limit", limit)):
        if value is not None and value < 0:
            raise _negative(field, value)
    return _CROSSED[level_unchecked(before, limit), level_unchecked(after, limit)]


def level_unchecked(current: int, limit: int | None) -> UsageLevel:
    """`level_for` without its argument checks, for counts the caller knows are valid (the
    ledger's totals): the usage-report hot path. Integer arithmetic: no float rounding at the
    exact 75 % and 90 % boundaries."""
    if limit is None:
        return _OK
    if current >= limit:
        return _EXCEEDED
    scaled = 100 * current
    if scaled >= UPGRADE_PROMPT_PERCENT * limit:
        return _UPGRADE_PROMPT
    if scaled >= WARNING_PERCENT * limit:
        return _WARNING
    return _OK


def _negative(field: str, value: int) -> InvalidArgument:
    return InvalidArgument(field, f"must not be negative, got {value}")
