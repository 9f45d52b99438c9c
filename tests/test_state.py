"""The status rules: which plan a stored subscription grants, and until when."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from entitlements.policies import default_catalog
from entitlements.state import derive
from entitlements.store.records import AccountSnapshot, OverrideRecord, SubscriptionRecord

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
GRACE = timedelta(days=7)


def snapshot(status: str = "active", plan: str = "pro", **fields: object) -> AccountSnapshot:
    values: dict[str, object] = {
        "id": "sub_1",
        "account_id": "ws",
        "plan_id": plan,
        "status": status,
        "interval": "month",
        "payment_method": "card",
        "current_period_start": NOW - timedelta(days=10),
        "current_period_end": NOW + timedelta(days=20),
        "created_at": NOW - timedelta(days=40),
        "updated_at": NOW - timedelta(days=1),
    }
    values.update(fields)
    overrides = values.pop("overrides", ())
    return AccountSnapshot(
        account_id="ws",
        revision=4,
        subscription=SubscriptionRecord(**values),  # type: ignore[arg-type]
        overrides=overrides,  # type: ignore[arg-type]
    )


def plan_of(snap: AccountSnapshot | None, now: datetime = NOW) -> str:
    return derive(default_catalog(), "ws", snap, now=now, past_due_grace=GRACE).plan_id


def test_an_account_never_stored_is_free_at_revision_zero() -> None:
    ent = derive(default_catalog(), "ws", None, now=NOW, past_due_grace=GRACE)
    assert (ent.plan_id, ent.revision, ent.status, ent.valid_until) == ("free", 0, "none", None)


@pytest.mark.parametrize("status", ["active", "trialing"])
def test_active_and_trialing_grant_the_plan(status: str) -> None:
    assert plan_of(snapshot(status)) == "pro"


@pytest.mark.parametrize(
    "status", ["canceled", "unpaid", "incomplete", "incomplete_expired", "paused"]
)
def test_ended_or_unpaid_statuses_mean_free(status: str) -> None:
    assert plan_of(snapshot(status)) == "free"


def test_past_due_keeps_the_plan_until_the_grace_period_ends() -> None:
    since = NOW - timedelta(days=3)
    snap = snapshot("past_due", past_due_since=since)
    ent = derive(default_catalog(), "ws", snap, now=NOW, past_due_grace=GRACE)
    assert ent.plan_id == "pro"
    assert ent.grace_period_end == since + GRACE
    assert ent.valid_until == since + GRACE
    assert plan_of(snap, now=since + GRACE) == "free"
    assert plan_of(snap, now=since + GRACE - timedelta(seconds=1)) == "pro"


def test_past_due_without_a_recorded_start_counts_from_the_last_update() -> None:
    snap = snapshot("past_due", updated_at=NOW - timedelta(days=8))
    assert plan_of(snap) == "free"


def test_cancel_at_period_end_keeps_the_plan_until_the_period_ends() -> None:
    end = NOW + timedelta(days=2)
    snap = snapshot(cancel_at_period_end=True, current_period_end=end)
    ent = derive(default_catalog(), "ws", snap, now=NOW, past_due_grace=GRACE)
    assert (ent.plan_id, ent.valid_until) == ("pro", end)
    assert plan_of(snap, now=end) == "free"


def test_crypto_subscription_lapses_at_the_end_of_the_paid_period() -> None:
    end = NOW + timedelta(days=1)
    snap = snapshot(payment_method="crypto", current_period_end=end)
    assert plan_of(snap) == "pro"
    assert plan_of(snap, now=end + timedelta(seconds=1)) == "free"


def test_renewing_card_subscription_has_no_time_limit() -> None:
    ent = derive(default_catalog(), "ws", snapshot(), now=NOW, past_due_grace=GRACE)
    assert ent.valid_until is None


def test_a_subscription_to_a_plan_no_longer_in_the_catalog_grants_free() -> None:
    assert plan_of(snapshot(plan="platinum")) == "free"


def test_expired_overrides_do_not_apply_and_the_next_expiry_bounds_the_answer() -> None:
    soon = NOW + timedelta(hours=1)
    overrides = (
        OverrideRecord(kind="feature_grant", key="slaGuarantee", expires_at=soon),
        OverrideRecord(kind="limit", key="maxUsers", value=None, expires_at=NOW - timedelta(1)),
        OverrideRecord(kind="feature_revoke", key="tokenGating"),
    )
    ent = derive(
        default_catalog(), "ws", snapshot(overrides=overrides), now=NOW, past_due_grace=GRACE
    )
    assert ent.effective.can_use("slaGuarantee").allowed
    assert not ent.effective.can_use("tokenGating").allowed
    assert ent.effective.limits["maxUsers"] == 200
    assert ent.valid_until == soon


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    )
)
def test_as_of_parts_are_what_a_timestamp_makes_of_as_of(as_of: datetime) -> None:
    """Answers stamp `as_of` from parts computed once per derived account (no conversion per
    call, no process-wide cache of times)."""
    ent = derive(
        default_catalog(), "ws", None, now=as_of, past_due_grace=timedelta(days=7), as_of=as_of
    )
    expected = Timestamp()
    expected.FromDatetime(as_of)
    assert ent.as_of_parts == (expected.seconds, expected.nanos)
