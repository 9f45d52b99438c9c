"""Usage thresholds: limit checks, levels at the 75/90/100 % boundaries and crossed levels."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entitlements.errors import InvalidArgument
from entitlements.policies import (
    LimitCheck,
    UsageLevel,
    check_limit,
    crossed_levels,
    default_catalog,
    level_for,
)
from entitlements.policies.thresholds import THRESHOLD_LEVELS

CATALOG = default_catalog()

W, P, X = UsageLevel.WARNING, UsageLevel.UPGRADE_PROMPT, UsageLevel.EXCEEDED


def test_usage_levels_keep_the_proto_numbers() -> None:
    assert [(level.name, int(level)) for level in UsageLevel] == [
        ("OK", 1),
        ("WARNING", 2),
        ("UPGRADE_PROMPT", 3),
        ("EXCEEDED", 4),
    ]


def test_seed_free_max_users_at_8_is_allowed_at_80_percent_with_a_warning() -> None:
    check = check_limit(CATALOG.plan("free").limits["maxUsers"], 8)
    assert check == LimitCheck(
        allowed=True,
        limit=10,
        current=8,
        percentage=80.0,
        level=UsageLevel.WARNING,
        unlimited=False,
        remaining=2,
    )


@pytest.mark.parametrize(
    ("current", "allowed", "percentage", "level", "remaining"),
    [
        (0, True, 0.0, UsageLevel.OK, 100),
        (74, True, 74.0, UsageLevel.OK, 26),
        (75, True, 75.0, UsageLevel.WARNING, 25),
        (89, True, 89.0, UsageLevel.WARNING, 11),
        (90, True, 90.0, UsageLevel.UPGRADE_PROMPT, 10),
        (99, True, 99.0, UsageLevel.UPGRADE_PROMPT, 1),
        (100, False, 100.0, UsageLevel.EXCEEDED, 0),
        (101, False, 101.0, UsageLevel.EXCEEDED, 0),
        (250, False, 250.0, UsageLevel.EXCEEDED, 0),
    ],
)
def test_boundaries_of_a_limit_of_100(
    current: int, allowed: bool, percentage: float, level: UsageLevel, remaining: int
) -> None:
    check = check_limit(100, current)
    assert (check.allowed, check.percentage, check.level, check.remaining) == (
        allowed,
        percentage,
        level,
        remaining,
    )
    assert (check.limit, check.current, check.unlimited) == (100, current, False)
    assert level_for(current, 100) is level


@pytest.mark.parametrize(
    ("limit", "current", "level"),
    [
        (4, 2, UsageLevel.OK),  # 50 %
        (4, 3, UsageLevel.WARNING),  # exactly 75 %
        (3, 2, UsageLevel.OK),  # 66.7 %
        (3, 3, UsageLevel.EXCEEDED),
        (20, 14, UsageLevel.OK),  # 70 %
        (20, 15, UsageLevel.WARNING),
        (20, 17, UsageLevel.WARNING),  # 85 %
        (20, 18, UsageLevel.UPGRADE_PROMPT),
        (20, 19, UsageLevel.UPGRADE_PROMPT),  # 95 %
        (1, 0, UsageLevel.OK),
        (1, 1, UsageLevel.EXCEEDED),
        (10_000_000, 7_499_999, UsageLevel.OK),
        (10_000_000, 7_500_000, UsageLevel.WARNING),
        (10_000_000, 8_999_999, UsageLevel.WARNING),
        (10_000_000, 9_000_000, UsageLevel.UPGRADE_PROMPT),
        (10_000_000, 9_999_999, UsageLevel.UPGRADE_PROMPT),
        (10_000_000, 10_000_000, UsageLevel.EXCEEDED),
    ],
)
def test_levels_start_exactly_at_75_90_and_100_percent(
    limit: int, current: int, level: UsageLevel
) -> None:
    assert level_for(current, limit) is level
    assert check_limit(limit, current).level is level


def test_percentage_is_exact_for_simple_fractions() -> None:
    assert check_limit(3, 1).percentage == 100 / 3
    assert check_limit(10, 7).percentage == 70.0
    assert check_limit(1_000, 1).percentage == 0.1


@pytest.mark.parametrize("current", [0, 1, 50])
def test_a_limit_of_zero_is_exceeded_at_100_percent_and_never_allowed(current: int) -> None:
    check = check_limit(0, current)
    assert (check.allowed, check.percentage, check.level, check.remaining) == (
        False,
        100.0,
        UsageLevel.EXCEEDED,
        0,
    )
    assert level_for(current, 0) is UsageLevel.EXCEEDED


@pytest.mark.parametrize("current", [0, 1, 10**12])
def test_unlimited_is_always_allowed_at_zero_percent(current: int) -> None:
    check = check_limit(None, current)
    assert check == LimitCheck(
        allowed=True,
        limit=None,
        current=current,
        percentage=0.0,
        level=UsageLevel.OK,
        unlimited=True,
        remaining=None,
    )
    assert level_for(current, None) is UsageLevel.OK
    assert crossed_levels(0, current, None) == ()


@pytest.mark.parametrize("limit", [None, 0, 10])
def test_negative_current_is_invalid(limit: int | None) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_limit(limit, -1)
    assert info.value.field == "current"
    with pytest.raises(InvalidArgument) as info:
        level_for(-1, limit)
    assert info.value.field == "current"


def test_negative_limit_is_invalid() -> None:
    for call in (lambda: check_limit(-1, 0), lambda: level_for(0, -1)):
        with pytest.raises(InvalidArgument) as info:
            call()
        assert info.value.field == "limit"
    with pytest.raises(InvalidArgument) as info:
        crossed_levels(0, 1, -1)
    assert info.value.field == "limit"


@pytest.mark.parametrize(("before", "after", "field"), [(-1, 5, "before"), (5, -1, "after")])
def test_crossed_levels_rejects_negative_usage(before: int, after: int, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        crossed_levels(before, after, 10)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("before", "after", "crossed"),
    [
        (0, 7, ()),
        (7, 8, (W,)),
        (0, 8, (W,)),
        (8, 9, (P,)),
        (9, 10, (X,)),
        (7, 10, (W, P, X)),
        (0, 15, (W, P, X)),
        (8, 12, (P, X)),
        (10, 11, ()),
        (9, 9, ()),
        (10, 5, ()),
        (9, 0, ()),
    ],
)
def test_crossed_levels_are_the_thresholds_newly_reached(
    before: int, after: int, crossed: tuple[UsageLevel, ...]
) -> None:
    assert crossed_levels(before, after, 10) == crossed


def test_a_limit_of_zero_is_never_crossed_because_it_starts_exceeded() -> None:
    assert crossed_levels(0, 5, 0) == ()


# --- properties -----------------------------------------------------------------------------

limits = st.integers(0, 10**6)
counts = st.integers(0, 2 * 10**6)


def reached(current: int, limit: int | None) -> set[UsageLevel]:
    return {level for level in THRESHOLD_LEVELS if level <= level_for(current, limit)}


@given(limits, counts, counts)
def test_levels_are_monotonic_in_current(limit: int, a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert level_for(low, limit) <= level_for(high, limit)


@given(limits, counts)
def test_allowed_iff_current_is_below_the_limit(limit: int, current: int) -> None:
    check = check_limit(limit, current)
    assert check.allowed is (current < limit)
    assert check.remaining == max(limit - current, 0)
    assert check.unlimited is False


@given(st.integers(1, 10**6), counts)
def test_level_agrees_with_the_percentage(limit: int, current: int) -> None:
    check = check_limit(limit, current)
    assert check.percentage == 100 * current / limit
    expected = (
        UsageLevel.EXCEEDED
        if check.percentage >= 100
        else UsageLevel.UPGRADE_PROMPT
        if check.percentage >= 90
        else UsageLevel.WARNING
        if check.percentage >= 75
        else UsageLevel.OK
    )
    assert check.level is expected


@given(st.none() | limits, counts, counts)
def test_crossed_levels_is_the_set_difference_of_levels_reached(
    limit: int | None, before: int, after: int
) -> None:
    crossed = crossed_levels(before, after, limit)
    assert set(crossed) == reached(after, limit) - reached(before, limit)
    assert list(crossed) == sorted(crossed)
    assert len(set(crossed)) == len(crossed)
