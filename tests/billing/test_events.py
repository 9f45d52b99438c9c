"""Outbound events from Stripe: a subscription's transitions and failed payments are written
with the webhook's (or the API answer's) change, once whatever Stripe sends again, and a real
receiver gets each with its documented payload."""

from __future__ import annotations

import asyncio
import time

import pytest
from nchat.entitlements.v1 import billing_service_pb2 as pb
from sqlalchemy import text

from entitlements.store.repository import Store
from tests.billing.conftest import WEBHOOK_SECRET, Harness, start_harness
from tests.billing.helpers import deliver, subscribe
from tests.events.outbox import check_documented, outbox
from tests.events.outbox import deliver as deliver_events
from tests.events.receiver import Receiver
from tests.stripe_double import WebhookSender, event


async def test_a_stripe_subscriptions_lifecycle_reaches_the_receiver_once_per_transition(
    lone_harness: Harness, receiver: Receiver
) -> None:
    h = lone_harness
    acct = "acct-events"
    _, sub = await subscribe(h, acct, "starter")
    created = event("customer.subscription.created", sub)
    assert (await h.sender.post(created))[0] == 200  # the same state again: nothing new
    assert (await h.sender.post(created))[1]["outcome"] == "duplicate"

    await h.call("UpdateSubscription", pb.UpdateSubscriptionRequest(account_id=acct, plan_id="pro"))
    # Stripe's own event for the upgrade the API answer already applied: nothing new.
    assert (await deliver(h, "customer.subscription.updated", h.double.subscriptions[sub["id"]]))[
        0
    ] == 200

    h.double.update_subscription(sub["id"], status="past_due")
    next_attempt = int(time.time()) + 3 * 86400
    failed = event(
        "invoice.payment_failed", h.double.invoice(sub["id"], paid=False, next_attempt=next_attempt)
    )
    assert (await h.sender.post(failed))[0] == 200
    assert (await h.sender.post(failed))[1]["outcome"] == "duplicate"
    # The same attempt in another event (as a replayed one would be): recorded once.
    assert (await deliver(h, "invoice.payment_failed", failed["data"]["object"]))[0] == 200

    h.double.update_subscription(sub["id"], status="active")
    await h.call(
        "CancelSubscription", pb.CancelSubscriptionRequest(account_id=acct, at_period_end=True)
    )
    now = int(time.time())
    h.double.update_subscription(sub["id"], status="canceled", canceled_at=now, ended_at=now)
    deleted = h.double.subscriptions[sub["id"]]
    assert (await deliver(h, "customer.subscription.deleted", deleted))[0] == 200
    assert (await deliver(h, "customer.subscription.deleted", deleted))[0] == 200

    got = await deliver_events(h.store.engine, receiver)

    assert [e["type"] for e in got] == [
        "subscription.activated",
        "subscription.changed",
        "payment.failed",
        "subscription.past_due",
        "subscription.canceled",
        "subscription.canceled",
    ]
    for body in got:
        check_documented(body)
        assert body["account_id"] == acct
    activated, changed, payment, past_due, scheduled, ended = (e["data"] for e in got)
    assert (activated["plan_id"], activated["interval"], activated["payment_method"]) == (
        "starter",
        "month",
        "card",
    )
    assert activated["subscription_id"] == sub["id"]
    assert (changed["previous_plan_id"], changed["plan_id"]) == ("starter", "pro")
    assert payment == {
        "subscription_id": sub["id"],
        "invoice_id": failed["data"]["object"]["id"],
        "amount_cents": 2500,
        "currency": "usd",
        "attempt_count": 1,
        "next_attempt_at": payment["next_attempt_at"],
    }
    assert payment["next_attempt_at"].startswith(
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(next_attempt))
    )
    assert past_due["plan_id"] == "pro" and past_due["grace_ends_at"] > past_due["past_due_since"]
    assert (scheduled["cancel_at_period_end"], scheduled["ended_at"]) == (True, None)
    assert ended["status"] == "canceled" and ended["ended_at"] is not None


async def test_a_webhook_whose_change_rolled_back_writes_no_event_and_its_retry_writes_one(
    lone_harness: Harness,
) -> None:
    h = lone_harness
    _, sub = await subscribe(h, "acct-rollback", "pro")
    before = len(await outbox(h.store.engine))
    h.double.update_subscription(sub["id"], status="past_due")
    failed = event("invoice.payment_failed", h.double.invoice(sub["id"], paid=False))
    # The change fails after its payment.failed event was appended: the revision bump's
    # change-feed row is refused, so the whole transaction rolls back.
    async with h.store.engine.begin() as connection:
        await connection.execute(
            text(
                "CREATE TRIGGER refuse BEFORE INSERT ON entitlement_changes "
                "BEGIN SELECT RAISE(ABORT, 'refused for the test'); END"
            )
        )
    status, _ = await h.sender.post(failed)
    assert status != 200
    assert len(await outbox(h.store.engine)) == before

    async with h.store.engine.begin() as connection:
        await connection.execute(text("DROP TRIGGER refuse"))
    assert (await h.sender.post(failed))[0] == 200  # Stripe retries it

    written = await outbox(h.store.engine)
    assert [e["type"] for e in written[before:]] == ["payment.failed", "subscription.past_due"]


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_replicas_receiving_the_same_changes_write_one_event_per_transition(
    harness: Harness,
) -> None:
    h = harness
    _, sub = await subscribe(h, "acct-replicas", "starter")
    other_store = Store.open(h.store.engine.url.render_as_string(hide_password=False))
    running, http = await start_harness(h.settings, other_store, h.double)
    try:
        replica = WebhookSender(f"http://127.0.0.1:{http.port}/webhooks/stripe", WEBHOOK_SECRET)
        h.double.update_subscription(sub["id"], price="price_business_monthly")
        upgraded = h.double.subscriptions[sub["id"]]
        # The same event to both replicas, and the same change in distinct events (Stripe's
        # created/updated pair, a replay): both replicas at once.
        same = event("customer.subscription.updated", upgraded)
        others = [event("customer.subscription.updated", upgraded) for _ in range(2)]
        answers = await asyncio.gather(
            *(s.post(e) for e in (same, *others) for s in (h.sender, replica))
        )
        h.double.update_subscription(sub["id"], status="past_due")
        invoice = h.double.invoice(sub["id"], paid=False)
        answers += await asyncio.gather(
            *(s.post(event("invoice.payment_failed", invoice)) for s in (h.sender, replica) * 2)
        )
    finally:
        await http.stop()
        await running.stop(0)
        await other_store.close()

    assert {status for status, _ in answers} == {200}
    written = await outbox(h.store.engine)
    assert [e["type"] for e in written] == [
        "subscription.activated",
        "subscription.changed",
        "payment.failed",
        "subscription.past_due",
    ]
    assert written[1]["data"]["plan_id"] == "business"
