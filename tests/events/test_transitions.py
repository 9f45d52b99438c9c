"""Which events a change makes: decided from the state before and after it, so the same state
written again makes none."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from entitlements.events.transitions import (
    CryptoPaymentState,
    crypto_payment_events,
    subscription_events,
)
from entitlements.store.records import (
    PAYMENT_METHODS,
    SUBSCRIPTION_INTERVALS,
    SUBSCRIPTION_STATUSES,
    SubscriptionRecord,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
GRACE = timedelta(days=7)
SUB = SubscriptionRecord(
    id="sub_1",
    account_id="ws",
    plan_id="starter",
    status="active",
    interval="month",
    payment_method="card",
    current_period_end=NOW + timedelta(days=30),
)


def types(old: SubscriptionRecord | None, new: SubscriptionRecord) -> list[str]:
    return [e.type for e in subscription_events(old, new, ref="r1", past_due_grace=GRACE, now=NOW)]


def test_each_subscription_transition_makes_its_event() -> None:
    incomplete = replace(SUB, status="incomplete")
    assert types(None, SUB) == ["subscription.activated"]
    assert types(incomplete, SUB) == ["subscription.activated"]
    assert types(None, incomplete) == []
    assert types(SUB, replace(SUB, plan_id="pro")) == ["subscription.changed"]
    assert types(SUB, replace(SUB, interval="year")) == ["subscription.changed"]
    assert types(SUB, replace(SUB, status="past_due")) == ["subscription.past_due"]
    assert types(SUB, replace(SUB, cancel_at_period_end=True)) == ["subscription.canceled"]
    assert types(SUB, replace(SUB, status="canceled")) == ["subscription.canceled"]
    # Held the plan all along, or never did: nothing to tell.
    assert types(replace(SUB, status="past_due"), SUB) == []
    assert types(replace(SUB, cancel_at_period_end=True), SUB) == []
    assert types(SUB, replace(SUB, current_period_end=NOW + timedelta(days=60))) == []
    assert types(replace(SUB, status="canceled"), replace(SUB, status="incomplete_expired")) == []
    # A canceled subscription started again is activated again.
    assert types(replace(SUB, status="canceled"), SUB) == ["subscription.activated"]


def test_a_past_due_event_tells_when_the_grace_ends() -> None:
    since = NOW - timedelta(days=1)
    (event,) = subscription_events(
        SUB,
        replace(SUB, status="past_due", past_due_since=since),
        ref="evt_1",
        past_due_grace=GRACE,
        now=NOW,
    )
    assert event.data["past_due_since"] == "2026-11-27T12:00:00.000+00:00"
    assert event.data["grace_ends_at"] == "2026-12-04T12:00:00.000+00:00"
    assert event.dedup_key == "subscription.past_due:sub_1:past_due:evt_1"


subscriptions = st.builds(
    SubscriptionRecord,
    id=st.just("sub_1"),
    account_id=st.just("ws"),
    plan_id=st.sampled_from(["starter", "pro"]),
    status=st.sampled_from(SUBSCRIPTION_STATUSES),
    interval=st.sampled_from(SUBSCRIPTION_INTERVALS),
    payment_method=st.sampled_from(PAYMENT_METHODS),
    cancel_at_period_end=st.booleans(),
)


@given(subscriptions)
def test_the_same_state_written_again_makes_no_event(sub: SubscriptionRecord) -> None:
    assert types(sub, sub) == []


@given(subscriptions, subscriptions)
def test_a_change_makes_each_event_type_at_most_once_with_distinct_keys(
    old: SubscriptionRecord, new: SubscriptionRecord
) -> None:
    made = subscription_events(old, new, ref="r1", past_due_grace=GRACE, now=NOW)
    keys = [e.dedup_key for e in made]
    assert len(keys) == len(set(keys))
    assert all(e.account_id == "ws" for e in made)


def payment(status: str, **kw: object) -> CryptoPaymentState:
    values: dict[str, object] = {
        "id": "cp_1",
        "account_id": "ws",
        "plan_id": "pro",
        "interval": "month",
        "network": "local",
        "currency": "USDC",
        "status": status,
        "amount_base_units": 25_000_137,
        "received_base_units": 25_000_137,
        "decimals": 6,
        "tx_hash": "0xabc",
        "subscription_id": None,
        "revision_ms": 1,
    }
    values.update(kw)
    return CryptoPaymentState(**values)  # type: ignore[arg-type]


def payment_types(old: str, new: str) -> list[str]:
    return [e.type for e in crypto_payment_events(payment(old), payment(new), now=NOW)]


def test_each_crypto_payment_transition_makes_its_event() -> None:
    assert payment_types("processing", "confirmed") == ["crypto_payment.confirmed"]
    assert payment_types("underpaid", "overpaid") == ["crypto_payment.confirmed"]
    assert payment_types("processing", "underpaid") == ["crypto_payment.underpaid"]
    assert payment_types("confirmed", "pending") == ["crypto_payment.reversed"]
    for status in ("pending", "processing", "confirmed", "underpaid", "paid_late"):
        assert payment_types(status, status) == []
    assert payment_types("confirmed", "overpaid") == []
    (event,) = crypto_payment_events(payment("processing"), payment("confirmed"), now=NOW)
    assert (event.data["amount"], event.data["received"]) == ("25.000137", "25.000137")
