"""The quote arithmetic: unique digits survive any total, rounding is up, never floats."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entitlements.crypto.amounts import MAX_SLOT, format_amount, scheme_for
from entitlements.crypto.payments import add_interval


@given(
    decimals=st.sampled_from([6, 18]),
    cents=st.integers(1, 10**9),
    slot=st.integers(1, MAX_SLOT),
    extra_cents=st.integers(-(10**6), 10**6),
)
def test_a_stablecoin_amount_carries_its_slot_whatever_total_is_sent(
    decimals: int, cents: int, slot: int, extra_cents: int
) -> None:
    scheme = scheme_for("USDC", decimals)
    amount = scheme.amount(scheme.stable_base(cents), slot)
    assert scheme.slot_of(amount) == slot
    sent = amount + extra_cents * 10 ** (decimals - 2)
    if sent > 0:
        assert scheme.slot_of(sent) == slot  # an under- or overpayment still names it


@given(
    cents=st.integers(1, 10**7),
    rate=st.decimals("1", "100000", places=8),
    slot=st.integers(1, MAX_SLOT),
)
def test_an_eth_amount_covers_the_price_and_carries_its_slot(
    cents: int, rate: Decimal, slot: int
) -> None:
    scheme = scheme_for("ETH", 18)
    base = scheme.eth_base(cents, rate)
    assert Decimal(base) * rate >= Decimal(cents) * 10**16  # never below the price
    assert base % scheme.unit == 0
    assert scheme.slot_of(scheme.amount(base, slot)) == slot


def test_round_amounts_and_dust_carry_no_slot() -> None:
    usdc = scheme_for("USDC", 6)
    assert usdc.slot_of(25_000_000) is None
    assert scheme_for("USDT", 18).slot_of(25 * 10**18 + 1) is None  # below the quantum


def test_amounts_are_formatted_as_plain_decimals() -> None:
    assert format_amount(25_000_137, 6) == "25.000137"
    assert format_amount(25_000_000, 6) == "25"
    assert format_amount(10**16 + 7 * 10**9, 18) == "0.010000007"
    assert format_amount(0, 18) == "0"


def test_coarse_tokens_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot carry"):
        scheme_for("USDC", 2)


def test_a_month_is_a_calendar_month_clamped_to_its_last_day() -> None:
    from datetime import UTC, datetime

    assert add_interval(datetime(2026, 1, 31, tzinfo=UTC), "month") == datetime(
        2026, 2, 28, tzinfo=UTC
    )
    assert add_interval(datetime(2026, 12, 15, tzinfo=UTC), "month") == datetime(
        2027, 1, 15, tzinfo=UTC
    )
    assert add_interval(datetime(2028, 2, 29, tzinfo=UTC), "year") == datetime(
        2029, 2, 28, tzinfo=UTC
    )
