"""The Python client's event receiver: accepts what the `standardwebhooks` package signs and
the service sends, refuses anything tampered with, old or signed with another secret."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from nchat.entitlements.client import (
    EventVerificationError,
    RenewalUpcoming,
    ThresholdCrossed,
    verify_event,
)
from standardwebhooks import Webhook

from entitlements.events.signing import decode_secret, signed_headers
from entitlements.events.types import renewal_upcoming, threshold_crossed
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
