"""Parsing Stripe's JSON shapes, and the signature check over the raw body."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.stripe import StripeInvoice, StripeSubscription
from adapters.webhooks import BadSignature, verify_signature
from tests.stripe_double import sign

SECRET = "whsec_unit"


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def test_subscription_period_comes_from_the_item_in_recent_api_versions() -> None:
    sub = StripeSubscription.parse(
        {
            "id": "sub_1",
            "customer": {"id": "cus_1", "object": "customer"},
            "status": "active",
            "cancel_at_period_end": False,
            "current_period_end": 1,  # an old API version's place: the item wins
            "items": {
                "data": [
                    {
                        "id": "si_1",
                        "price": {"id": "price_1"},
                        "current_period_start": 1_700_000_000,
                        "current_period_end": 1_702_592_000,
                    }
                ]
            },
            "metadata": {"account_id": "acct-1"},
        }
    )

    assert (sub.customer_id, sub.price_id, sub.item_id) == ("cus_1", "price_1", "si_1")
    assert sub.current_period_end is not None
    assert int(sub.current_period_end.timestamp()) == 1_702_592_000
    assert sub.metadata == {"account_id": "acct-1"}


@pytest.mark.parametrize(
    "shape",
    [
        {"subscription": "sub_9"},
        {"parent": {"subscription_details": {"subscription": "sub_9"}}},
    ],
)
def test_invoice_subscription_is_found_in_old_and_new_shapes(shape: dict[str, object]) -> None:
    invoice = StripeInvoice.parse(
        {"id": "in_1", "amount_paid": 800, "currency": "usd", "next_payment_attempt": None, **shape}
    )
    assert invoice.subscription_id == "sub_9"
    assert invoice.next_payment_attempt is None


def test_a_valid_signature_passes() -> None:
    payload = b'{"id": "evt_1"}'
    verify_signature(payload, sign(payload, [SECRET]), [SECRET])


@pytest.mark.parametrize(("offset", "message"), [(-301, "tolerance"), (301, "future")])
def test_timestamps_outside_the_tolerance_either_way_fail(offset: int, message: str) -> None:
    payload = b'{"id": "evt_1"}'
    header = sign(payload, [SECRET], timestamp=int(time.time()) + offset)

    with pytest.raises(BadSignature, match=message):
        verify_signature(payload, header, [SECRET])


def test_any_configured_secret_and_any_v1_signature_may_match() -> None:
    payload = b'{"id": "evt_1"}'
    header = sign(payload, ["whsec_unknown", "whsec_new"])

    verify_signature(payload, header, [SECRET, "whsec_new"])
    with pytest.raises(BadSignature):
        verify_signature(payload, header, [SECRET])


def test_a_body_that_is_not_utf8_fails() -> None:
    payload = b"\xff\xfe"
    with pytest.raises(BadSignature):
        verify_signature(payload, sign(payload, [SECRET]), [SECRET])


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=200).filter(_utf8), st.data())
def test_any_body_verifies_as_signed_and_no_changed_byte_does(
    body: bytes, data: st.DataObject
) -> None:
    header = sign(body, [SECRET])
    verify_signature(body, header, [SECRET])

    index = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    changed = bytearray(body)
    changed[index] = (changed[index] + 1) % 128 or 1
    if bytes(changed) != body:
        with pytest.raises(BadSignature):
            verify_signature(bytes(changed), header, [SECRET])
