"""Which events the shim uses, which it acknowledges and ignores, and where it listens."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from entitlements.billing import HANDLED_EVENTS
from tests.billing.conftest import WEBHOOK_SECRET, Harness
from tests.billing.helpers import subscribe
from tests.stripe_double import WebhookSender, event

DOC = Path(__file__).resolve().parents[2] / "docs" / "stripe.md"


@pytest.mark.parametrize(
    ("type_", "obj"),
    [
        # A balance has no id.
        ("balance.available", {"object": "balance", "available": [], "pending": []}),
        # An upcoming invoice has no id yet (Stripe's docs).
        ("invoice.upcoming", {"object": "invoice", "amount_due": 2500, "customer": "cus_1"}),
        # Not even an object.
        ("ping.unknown", None),
    ],
)
async def test_an_unused_event_type_without_an_object_id_is_acknowledged_and_ignored(
    lone_harness: Harness, type_: str, obj: dict[str, object] | None
) -> None:
    h = lone_harness
    body = event(type_, {})
    body["data"] = {"object": obj} if obj is not None else {}

    status, answer = await h.sender.post(body)

    assert (status, answer["outcome"]) == (200, "ignored")
    assert await h.billing.store.event_status(body["id"]) == "ignored"
    assert (await h.sender.post(body))[1]["outcome"] == "duplicate"


async def test_a_handled_event_type_still_needs_its_object_id(lone_harness: Harness) -> None:
    h = lone_harness
    body = event("customer.subscription.updated", {})
    body["data"] = {"object": {"object": "subscription", "status": "active"}}

    status, _ = await h.sender.post(body)

    assert status == 400
    assert await h.billing.store.event_status(body["id"]) is None


async def test_the_seed_s_webhook_path_is_served_too(lone_harness: Harness) -> None:
    h = lone_harness
    _, sub = await subscribe(h, "acct-path", "pro")
    seed_path = WebhookSender(
        h.webhook_url.replace("/webhooks/stripe", "/api/billing/webhook"), WEBHOOK_SECRET
    )
    h.double.update_subscription(sub["id"], price="price_business_monthly")

    status, answer = await seed_path.post(
        event("customer.subscription.updated", h.double.subscriptions[sub["id"]])
    )

    assert (status, answer["outcome"]) == (200, "processed")
    assert await h.can_use("acct-path", "slaGuarantee") == (True, "business")


def test_the_documented_stripe_listen_command_forwards_exactly_the_handled_events() -> None:
    text = DOC.read_text()
    commands = re.findall(r"stripe listen(?:[^\n]|\\\n)*?--events ([a-z_.,]+)", text)

    assert commands, "docs/stripe.md shows no `stripe listen --events ...`"
    for listed in commands:
        assert listed.split(",") == list(HANDLED_EVENTS)
