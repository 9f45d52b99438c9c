"""The Stripe webhook shim end to end: signed events in, CanUseFeature answers out."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from nchat.entitlements.v1 import billing_service_pb2 as pb
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import subscription_pb2

from entitlements.store.billing_repository import BillingChange, BillingStore
from entitlements.store.repository import Store
from tests.billing.conftest import WEBHOOK_SECRET, Harness, start_harness
from tests.billing.helpers import checkout_request, deliver, subscribe
from tests.server.conftest import OPS
from tests.stripe_double import WebhookSender, event, sign


async def revision(h: Harness, account_id: str) -> int:
    snapshot = await h.store.get_account_snapshot(account_id)
    return snapshot.revision if snapshot else 0


async def test_lifecycle_from_checkout_to_cancel_changes_what_can_use_feature_answers(
    harness: Harness,
) -> None:
    h = harness
    acct = "acct-life"
    watch = h.entitlements.WatchEntitlements(
        ent_pb.WatchEntitlementsRequest(account_ids=[acct]), metadata=OPS
    )
    assert await h.can_use(acct, "customBranding") == (False, "free")

    # checkout -> completed: the plan is granted, and a watcher hears of it within a second
    answer = await h.call("CreateCheckoutSession", checkout_request(acct, "starter"))
    assert answer.url.startswith("https://") and answer.session_id
    session, sub = h.double.complete_checkout(answer.session_id)
    status, body = await deliver(h, "checkout.session.completed", session)
    assert (status, body["outcome"]) == (200, "processed")
    pushed = await asyncio.wait_for(watch.read(), timeout=1.0)
    assert pushed.entitlements.plan_id == "starter"
    assert await h.can_use(acct, "customBranding") == (True, "starter")

    # created (arrives after checkout's) and paid: recorded, nothing moves back
    assert (await deliver(h, "customer.subscription.created", sub))[0] == 200
    invoice = h.double.invoice(sub["id"], paid=True)
    assert (await deliver(h, "invoice.paid", invoice))[0] == 200
    paid = await BillingStore(h.store).paid_invoices(acct)
    assert [(p.stripe_invoice_id, p.amount_cents, p.currency, p.payment_method) for p in paid] == [
        (invoice["id"], 800, "usd", "card")
    ]

    # upgraded through the API, with proration
    upgraded = await h.call(
        "UpdateSubscription", pb.UpdateSubscriptionRequest(account_id=acct, plan_id="pro")
    )
    assert upgraded.subscription.plan_id == "pro"
    assert h.double.subscriptions[sub["id"]]["_last_proration"] == "create_prorations"
    assert h.double.subscriptions[sub["id"]]["items"]["data"][0]["price"]["id"] == (
        "price_pro_monthly"
    )
    assert await h.can_use(acct, "tokenGating") == (True, "pro")

    # a renewal fails: past_due keeps the plan through the grace period
    h.double.update_subscription(sub["id"], status="past_due")
    failed = h.double.invoice(sub["id"], paid=False, next_attempt=int(time.time()) + 3 * 86400)
    assert (await deliver(h, "invoice.payment_failed", failed))[0] == 200
    ent = (
        await h.entitlements.GetEntitlements(
            ent_pb.GetEntitlementsRequest(account_id=acct), metadata=OPS
        )
    ).entitlements
    assert ent.subscription_status == subscription_pb2.SUBSCRIPTION_STATUS_PAST_DUE
    assert ent.plan_id == "pro"
    grace_end = ent.grace_period_end.ToDatetime(UTC)
    assert timedelta(days=6.9) < grace_end - datetime.now(UTC) <= timedelta(days=7)
    failures = await BillingStore(h.store).failed_payments(acct)
    assert [(f.amount_cents, f.attempt_count) for f in failures] == [(2500, 1)]
    assert failures[0].next_payment_attempt is not None

    # canceled: back to free
    now = int(time.time())
    h.double.update_subscription(sub["id"], status="canceled", canceled_at=now, ended_at=now)
    deleted = h.double.subscriptions[sub["id"]]
    assert (await deliver(h, "customer.subscription.deleted", deleted))[0] == 200
    assert await h.can_use(acct, "tokenGating") == (False, "free")
    got = await h.call("GetSubscription", pb.GetSubscriptionRequest(account_id=acct))
    assert got.subscription.status == subscription_pb2.SUBSCRIPTION_STATUS_CANCELED
    assert got.subscription.ended_at.seconds == now
    watch.cancel()


@pytest.mark.parametrize("env_extra", [{"ENTITLEMENTS_PAST_DUE_GRACE_DAYS": "0"}])
async def test_past_due_after_the_grace_period_falls_back_to_free(lone_harness: Harness) -> None:
    h = lone_harness
    _, sub = await subscribe(h, "acct-grace", "pro")
    h.double.update_subscription(sub["id"], status="past_due")
    failed = h.double.invoice(sub["id"], paid=False, next_attempt=None)

    status, body = await deliver(h, "invoice.payment_failed", failed)

    assert status == 200 and "stopped retrying" in body["detail"]
    assert await h.can_use("acct-grace", "tokenGating") == (False, "free")


async def test_past_due_since_is_kept_while_past_due_and_cleared_on_recovery(
    lone_harness: Harness,
) -> None:
    h = lone_harness
    _, sub = await subscribe(h, "acct-pd", "starter")
    h.double.update_subscription(sub["id"], status="past_due")
    await deliver(h, "customer.subscription.updated", h.double.subscriptions[sub["id"]])
    first = (await h.store.get_account_snapshot("acct-pd")).subscription  # type: ignore[union-attr]
    assert first is not None and first.past_due_since is not None

    h.double.update_subscription(sub["id"], metadata={"account_id": "acct-pd", "note": "x"})
    failed = h.double.invoice(sub["id"], paid=False, attempt_count=2, next_attempt=1)
    await deliver(h, "invoice.payment_failed", failed)
    second = (await h.store.get_account_snapshot("acct-pd")).subscription  # type: ignore[union-attr]
    assert second is not None and second.past_due_since == first.past_due_since

    h.double.update_subscription(sub["id"], status="active")
    await deliver(h, "invoice.paid", h.double.invoice(sub["id"], paid=True))
    recovered = (await h.store.get_account_snapshot("acct-pd")).subscription  # type: ignore[union-attr]
    assert recovered is not None
    assert (recovered.status, recovered.past_due_since) == ("active", None)


async def test_duplicate_webhook_is_applied_once(harness: Harness) -> None:
    h = harness
    _, sub = await subscribe(h, "acct-dup")
    h.double.update_subscription(sub["id"], price="price_pro_monthly")
    upgraded = event("customer.subscription.updated", h.double.subscriptions[sub["id"]])
    before = await revision(h, "acct-dup")

    first = await h.sender.post(upgraded)
    second = await h.sender.post(upgraded)

    assert (first[0], first[1]["outcome"]) == (200, "processed")
    assert (second[0], second[1]["outcome"]) == (200, "duplicate")
    assert await revision(h, "acct-dup") == before + 1


async def test_duplicate_delivered_concurrently_to_two_replicas_is_applied_once(
    harness: Harness,
) -> None:
    h = harness
    _, sub = await subscribe(h, "acct-race")
    # A second replica: its own engine, cache and shim on the same database.
    other_store = Store.open(h.store.engine.url.render_as_string(hide_password=False))
    running, http = await start_harness(h.settings, other_store, h.double)
    try:
        h.double.update_subscription(sub["id"], price="price_business_monthly")
        upgraded = event("customer.subscription.updated", h.double.subscriptions[sub["id"]])
        replica = WebhookSender(f"http://127.0.0.1:{http.port}/webhooks/stripe", WEBHOOK_SECRET)
        before = await revision(h, "acct-race")

        answers = await asyncio.gather(*(s.post(upgraded) for s in (h.sender, replica) * 3))

        assert {status for status, _ in answers} == {200}
        assert sorted(body["outcome"] for _, body in answers) == ["duplicate"] * 5 + ["processed"]
        assert await revision(h, "acct-race") == before + 1
        # The other replica may have applied it: this one answers it when asked for that
        # revision (its change feed brings it soon after anyway).
        assert await h.can_use("acct-race", "slaGuarantee", min_revision=before + 1) == (
            True,
            "business",
        )
    finally:
        await http.stop()
        await running.stop(0)
        await other_store.close()


async def test_an_older_update_after_a_newer_one_does_not_move_the_subscription_back(
    harness: Harness,
) -> None:
    h = harness
    _, sub = await subscribe(h, "acct-order", "starter")
    older = event(
        "customer.subscription.updated",
        h.double.subscriptions[sub["id"]],
        created=int(time.time()) - 60,
    )
    h.double.update_subscription(sub["id"], price="price_pro_monthly")
    newer = event("customer.subscription.updated", h.double.subscriptions[sub["id"]])

    assert (await h.sender.post(newer))[0] == 200
    assert (await h.sender.post(older))[0] == 200

    assert await h.can_use("acct-order", "tokenGating") == (True, "pro")


async def test_the_store_refuses_an_observation_older_than_the_stored_one(
    harness: Harness,
) -> None:
    h = harness
    _, sub = await subscribe(h, "acct-stale", "pro")
    stored = await BillingStore(h.store).subscription_by_stripe_id(sub["id"])
    assert stored is not None and stored.source_updated_at is not None
    from dataclasses import replace

    older = replace(
        stored,
        plan_id="starter",
        status="past_due",
        source_updated_at=stored.source_updated_at - timedelta(seconds=1),
    )

    result = await BillingStore(h.store).apply(
        BillingChange(account_id="acct-stale", subscription=older)
    )

    assert (result.stale, result.changed) == (True, False)
    assert await h.can_use("acct-stale", "tokenGating") == (True, "pro")


async def test_replayed_old_event_is_refused(lone_harness: Harness) -> None:
    h = lone_harness
    _, sub = await subscribe(h, "acct-replay")
    old = event("customer.subscription.updated", h.double.subscriptions[sub["id"]])

    status, body = await h.sender.post(old, timestamp=int(time.time()) - 301)

    assert status == 400 and "tolerance" in body["error"]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong secret", "No signatures found matching"),
        ("tampered body", "No signatures found matching"),
        ("no header", "no Stripe-Signature header"),
        ("no v1", "No signatures found with expected scheme"),
        ("garbage header", "no timestamp"),
    ],
)
async def test_bad_signature_is_refused(lone_harness: Harness, case: str, expected: str) -> None:
    h = lone_harness
    payload = json.dumps(event("customer.subscription.updated", {"id": "sub_x"})).encode()
    header = sign(payload, [WEBHOOK_SECRET])
    if case == "wrong secret":
        header = sign(payload, ["whsec_someone_else"])
    elif case == "tampered body":
        payload = payload.replace(b"sub_x", b"sub_y")
    elif case == "no v1":
        header = header.split(",")[0] + ",v0=abc"
    elif case == "garbage header":
        header = "hello"
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            h.webhook_url,
            data=payload,
            headers={"Stripe-Signature": header} if case != "no header" else {},
        ) as response,
    ):
        body = await response.json()

    assert response.status == 400
    assert expected in body["error"]


async def test_reserialized_body_fails_verification(lone_harness: Harness) -> None:
    h = lone_harness
    body = event("customer.subscription.updated", {"id": "sub_x", "a": 1})
    raw = json.dumps(body, indent=2).encode()
    header = sign(raw, [WEBHOOK_SECRET])

    status, _ = await h.sender.post(json.dumps(body).encode(), signature=header)

    assert status == 400


async def test_future_timestamp_is_refused_beyond_the_tolerance(lone_harness: Harness) -> None:
    h = lone_harness
    ignored = event("customer.created", {"id": "cus_x", "object": "customer"})

    # Beyond the 300 s tolerance by more than a loaded machine's delay before the check.
    far, far_body = await h.sender.post(ignored, timestamp=int(time.time()) + 330)
    near, _ = await h.sender.post(ignored, timestamp=int(time.time()) + 60)

    assert far == 400 and "future" in far_body["error"]
    assert near == 200


async def test_rotation_any_of_several_v1_signatures_passes(lone_harness: Harness) -> None:
    h = lone_harness
    ignored = event("customer.created", {"id": "cus_x", "object": "customer"})

    status, _ = await h.sender.post(ignored, secrets=["whsec_retired", WEBHOOK_SECRET])

    assert status == 200


@pytest.mark.parametrize(
    "env_extra", [{"STRIPE_WEBHOOK_SECRET": f"{WEBHOOK_SECRET}, whsec_test_next_0002"}]
)
async def test_rotation_any_configured_secret_may_sign(lone_harness: Harness) -> None:
    h = lone_harness
    ignored = event("customer.created", {"id": "cus_x", "object": "customer"})

    new, _ = await h.sender.post(ignored, secrets=["whsec_test_next_0002"])
    old, _ = await h.sender.post(
        event("customer.created", {"id": "cus_y"}), secrets=[WEBHOOK_SECRET]
    )

    assert (new, old) == (200, 200)


async def test_unknown_event_type_is_acknowledged_and_recorded_as_ignored(
    lone_harness: Harness,
) -> None:
    h = lone_harness
    ignored = event("customer.tax_id.created", {"id": "txi_1", "object": "tax_id"})

    status, body = await h.sender.post(ignored)

    assert (status, body["outcome"]) == (200, "ignored")
    assert await h.billing.store.event_status(ignored["id"]) == "ignored"
    assert (await h.sender.post(ignored))[1]["outcome"] == "duplicate"


async def test_a_body_that_is_not_an_event_is_refused(lone_harness: Harness) -> None:
    h = lone_harness
    status, _ = await h.sender.post(b"[1, 2]")
    missing, _ = await h.sender.post({"id": "evt_1", "type": "invoice.paid", "data": {}})
    assert (status, missing) == (400, 400)


async def test_unknown_price_is_surfaced_not_guessed(lone_harness: Harness) -> None:
    h = lone_harness
    h.double.add_price("price_mystery", amount=100, interval="month")
    customer = h.double.add_customer()
    sub = h.double.add_subscription(
        customer["id"], "price_mystery", metadata={"account_id": "acct-mystery"}
    )
    created = event("customer.subscription.created", sub)

    status, body = await h.sender.post(created)

    assert status == 422 and "price_mystery" in body["error"]
    assert await h.billing.store.event_status(created["id"]) == "failed"
    assert await h.store.get_account_snapshot("acct-mystery") is None
    assert await h.can_use("acct-mystery", "customBranding") == (False, "free")


async def test_database_outage_answers_503_applies_nothing_and_the_retry_applies_once(
    harness: Harness,
) -> None:
    h = harness
    _, sub = await subscribe(h, "acct-outage", "starter")
    h.double.update_subscription(sub["id"], price="price_pro_monthly")
    upgraded = event("customer.subscription.updated", h.double.subscriptions[sub["id"]])
    before = await revision(h, "acct-outage")
    working = h.billing.store
    down = Store.open("postgresql+asyncpg://nobody@127.0.0.1:1/nothing")
    h.billing.store = BillingStore(down)
    try:
        status, _ = await h.sender.post(upgraded)
    finally:
        h.billing.store = working
        await down.close()

    assert status == 503
    assert await revision(h, "acct-outage") == before
    assert await h.can_use("acct-outage", "tokenGating") == (False, "starter")

    retried = await h.sender.post(upgraded)
    again = await h.sender.post(upgraded)

    assert (retried[0], retried[1]["outcome"]) == (200, "processed")
    assert again[1]["outcome"] == "duplicate"
    assert await revision(h, "acct-outage") == before + 1
    assert await h.can_use("acct-outage", "tokenGating") == (True, "pro")


async def test_stripe_outage_during_a_webhook_answers_503_and_the_retry_applies(
    lone_harness: Harness,
) -> None:
    h = lone_harness
    _, sub = await subscribe(h, "acct-s-outage", "starter")
    h.double.update_subscription(sub["id"], price="price_pro_monthly")
    upgraded = event("customer.subscription.updated", h.double.subscriptions[sub["id"]])

    h.double.outage = True
    down, _ = await h.sender.post(upgraded)
    h.double.outage = False
    retried, body = await h.sender.post(upgraded)

    assert (down, retried, body["outcome"]) == (503, 200, "processed")
    assert await h.can_use("acct-s-outage", "tokenGating") == (True, "pro")


async def test_checkout_for_an_unknown_customer_is_linked_by_client_reference_id(
    harness: Harness,
) -> None:
    h = harness
    # A session made outside this service (no local record, no subscription metadata).
    status, session = h.double._create_checkout(
        {
            "mode": "subscription",
            "line_items": [{"price": "price_pro_yearly", "quantity": "1"}],
            "success_url": "https://x.example/ok",
            "cancel_url": "https://x.example/no",
            "client_reference_id": "acct-linked",
        }
    )
    assert status == 200
    completed, sub = h.double.complete_checkout(session["id"])
    created = event("customer.subscription.created", sub)

    early, early_body = await h.sender.post(created)
    linked, _ = await deliver(h, "checkout.session.completed", completed)
    retried, retried_body = await h.sender.post(created)

    assert early == 422 and "no known account" in early_body["error"]
    assert linked == 200
    assert (retried, retried_body["outcome"]) == (200, "processed")
    assert await h.can_use("acct-linked", "tokenGating") == (True, "pro")
    assert await h.billing.store.customer_for_account("acct-linked") == completed["customer"]
    got = await h.call("GetSubscription", pb.GetSubscriptionRequest(account_id="acct-linked"))
    assert got.subscription.stripe_customer_id == completed["customer"]


async def test_unpaid_checkout_grants_nothing_until_the_async_payment_succeeds(
    harness: Harness,
) -> None:
    h = harness
    session, sub = await subscribe(h, "acct-sepa", "starter", payment_status="unpaid")
    assert await h.can_use("acct-sepa", "customBranding") == (False, "free")
    assert (await deliver(h, "customer.subscription.created", sub))[0] == 200
    assert await h.can_use("acct-sepa", "customBranding") == (False, "free")

    paid = h.double.pay_checkout(session["id"])
    status, _ = await deliver(h, "checkout.session.async_payment_succeeded", paid)

    assert status == 200
    assert await h.can_use("acct-sepa", "customBranding") == (True, "starter")


async def test_healthz_answers_200(lone_harness: Harness) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{lone_harness.http.port}/healthz") as response,
    ):
        assert response.status == 200


async def test_watchers_see_a_webhook_change_within_a_second(lone_harness: Harness) -> None:
    h = lone_harness
    _, sub = await subscribe(h, "acct-watch", "starter")
    watch = h.entitlements.WatchEntitlements(
        ent_pb.WatchEntitlementsRequest(account_ids=["acct-watch"]), metadata=OPS
    )
    await asyncio.sleep(0.05)  # the stream is subscribed
    h.double.update_subscription(sub["id"], cancel_at_period_end=True)

    await deliver(h, "customer.subscription.updated", h.double.subscriptions[sub["id"]])
    pushed = await asyncio.wait_for(watch.read(), timeout=1.0)

    assert pushed.entitlements.cancel_at_period_end is True
    watch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watch.read()


async def test_an_invoice_that_is_not_for_a_subscription_is_ignored(
    lone_harness: Harness,
) -> None:
    h = lone_harness
    one_off = {"id": "in_one_off", "object": "invoice", "customer": "cus_x", "amount_paid": 5}

    status, body = await deliver(h, "invoice.paid", one_off)

    assert (status, body["outcome"]) == (200, "ignored")
