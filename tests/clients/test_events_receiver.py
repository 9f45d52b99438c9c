"""The Python client's event receiver: accepts what the `standardwebhooks` package signs and
the service sends, refuses anything tampered with, old or signed with another secret."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from nchat.entitlements.client import (
    CryptoPaymentConfirmed,
    CryptoPaymentReversed,
    CryptoPaymentUnderpaid,
    EventVerificationError,
    PaymentFailed,
    RenewalUpcoming,
    SubscriptionActivated,
    SubscriptionCanceled,
    SubscriptionChanged,
    SubscriptionPastDue,
    ThresholdCrossed,
    TokenAccessChanged,
    verify_event,
)
from standardwebhooks import Webhook

from entitlements.events.signing import decode_secret, signed_headers
from entitlements.events.transitions import (
    CryptoPaymentState,
    crypto_payment_events,
    payment_failed,
    subscription_events,
    token_access_changed,
)
from entitlements.events.types import renewal_upcoming, threshold_crossed
from entitlements.store.records import SubscriptionRecord
from tests.events.receiver import SECRET

OTHER = "whsec_" + "b" * 44
NOW = datetime.now(UTC)


def spec_headers(msg_id: str, body: str, at: float | None = None) -> dict[str, str]:
    """Headers as the reference implementation signs them."""
    sent = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(sent.timestamp())),
        "webhook-signature": Webhook(SECRET).sign(msg_id, sent, body),
    }


def test_an_event_signed_per_the_spec_is_verified_and_parsed() -> None:
    event = threshold_crossed("ws", "messages", "2026-11", 3, 9_100, 10_000, now=NOW)

    got = verify_event(event.body.encode(), spec_headers(event.id, event.body), SECRET)

    assert (got.id, got.type, got.account_id) == (event.id, "usage.threshold_crossed", "ws")
    assert ThresholdCrossed.of(got) == ThresholdCrossed(
        "ws", "messages", "2026-11", 90, 9_100, 10_000
    )


def test_what_the_service_sends_is_verified_by_both() -> None:
    end = datetime(2026, 12, 31, tzinfo=UTC)
    event = renewal_upcoming("ws", "sub_1", "pro", "month", end, 7, now=NOW)
    headers = signed_headers(decode_secret(SECRET), event.id, int(time.time()), event.body)

    assert Webhook(SECRET).verify(event.body, headers)["id"] == event.id
    renewal = RenewalUpcoming.of(verify_event(event.body, headers, SECRET))
    assert (renewal.subscription_id, renewal.current_period_end) == ("sub_1", end)


@pytest.mark.parametrize("case", ["tampered", "other secret", "old", "no signature", "id swapped"])
def test_a_bad_request_is_refused(case: str) -> None:
    event = threshold_crossed("ws", "messages", "2026-11", 4, 10_000, 10_000, now=NOW)
    body, secret = event.body, SECRET
    headers = spec_headers(event.id, body)
    if case == "tampered":
        body = body.replace("10000", "1")
    elif case == "other secret":
        secret = OTHER
    elif case == "old":
        headers = spec_headers(event.id, body, at=time.time() - 3600)
    elif case == "no signature":
        del headers["webhook-signature"]
    elif case == "id swapped":
        headers = spec_headers("evt_other", body)

    with pytest.raises(EventVerificationError):
        verify_event(body, headers, secret)


def _received(event: Any) -> Any:
    headers = signed_headers(decode_secret(SECRET), event.id, int(time.time()), event.body)
    return verify_event(event.body, headers, SECRET)


def test_every_event_type_the_service_sends_parses_into_its_typed_payload() -> None:
    end = datetime(2026, 12, 31, tzinfo=UTC)
    sub = SubscriptionRecord(
        id="sub_1",
        account_id="ws",
        plan_id="pro",
        status="active",
        interval="month",
        payment_method="card",
        current_period_end=end,
    )

    def made(old: SubscriptionRecord | None, new: SubscriptionRecord) -> Any:
        (event,) = subscription_events(old, new, ref="r1", past_due_grace=timedelta(7), now=NOW)
        return _received(event)

    activated = SubscriptionActivated.of(made(None, sub))
    assert (activated.plan_id, activated.current_period_end) == ("pro", end)
    changed = SubscriptionChanged.of(made(sub, replace(sub, plan_id="business")))
    assert (changed.previous_plan_id, changed.plan_id) == ("pro", "business")
    scheduled = SubscriptionCanceled.of(made(sub, replace(sub, cancel_at_period_end=True)))
    assert (scheduled.cancel_at_period_end, scheduled.ended_at) == (True, None)
    past_due = SubscriptionPastDue.of(made(sub, replace(sub, status="past_due")))
    assert past_due.grace_ends_at - past_due.past_due_since == timedelta(days=7)

    failed = PaymentFailed.of(
        _received(
            payment_failed(
                "ws",
                invoice_id="in_1",
                subscription_id="sub_1",
                amount_cents=2500,
                currency="eur",
                attempt_count=2,
                next_attempt_at=None,
                now=NOW,
            )
        )
    )
    assert (failed.amount_cents, failed.currency, failed.next_attempt_at) == (2500, "eur", None)

    paid = CryptoPaymentState(
        "cp_1",
        "ws",
        "pro",
        "month",
        "polygon",
        "USDC",
        "confirmed",
        25_000_001,
        25_000_001,
        6,
        "0xabc",
        "crypto_cp_1",
        1,
    )
    short = replace(paid, status="underpaid", received_base_units=20_000_000)
    (confirmed,) = crypto_payment_events(replace(paid, status="processing"), paid, now=NOW)
    assert CryptoPaymentConfirmed.of(_received(confirmed)).amount == "25.000001"
    (underpaid,) = crypto_payment_events(replace(paid, status="processing"), short, now=NOW)
    assert CryptoPaymentUnderpaid.of(_received(underpaid)).received == "20"
    (reversed_,) = crypto_payment_events(paid, replace(paid, status="pending"), now=NOW)
    assert CryptoPaymentReversed.of(_received(reversed_)).subscription_id == "crypto_cp_1"

    revoked = token_access_changed(
        channel_id="chan",
        user_id="u",
        wallet_addresses=["0xw"],
        granted=False,
        grant_id=1,
        since_ms=0,
        now=NOW,
    )
    assert TokenAccessChanged.of(_received(revoked)) == TokenAccessChanged(
        "chan", "u", ("0xw",), False
    )
    with pytest.raises(ValueError, match="not a"):
        PaymentFailed.of(_received(revoked))
