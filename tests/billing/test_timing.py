"""Money and access agree whatever order Stripe's events arrive in (issue 12's class)."""

from __future__ import annotations

import time

from entitlements.admin.service import AdminService
from entitlements.policies import default_catalog
from entitlements.store.admin_repository import AdminStore
from entitlements.store.billing_repository import BillingStore
from tests.billing.conftest import Harness
from tests.billing.helpers import checkout_request, deliver, subscribe
from tests.stripe_double import event


async def test_a_delayed_payment_reported_before_its_checkout_completed_still_grants(
    harness: Harness,
) -> None:
    h = harness
    answer = await h.call("CreateCheckoutSession", checkout_request("acct-sepa2", "pro"))
    unpaid, _ = h.double.complete_checkout(answer.session_id, payment_status="unpaid")
    completed = event("checkout.session.completed", unpaid)
    paid = h.double.pay_checkout(answer.session_id)

    # Stripe does not order deliveries: the later event arrives first.
    assert (await deliver(h, "checkout.session.async_payment_succeeded", paid))[0] == 200
    assert (await h.sender.post(completed))[0] == 200

    assert await h.can_use("acct-sepa2", "tokenGating") == (True, "pro")


async def test_a_late_cancellation_of_the_old_subscription_does_not_hide_the_new_one(
    harness: Harness,
) -> None:
    # Stripe's `created` has one-second precision: a subscription canceled and a new one
    # started within the same second (here from a payment link) tie on it.
    h = harness
    _, old = await subscribe(h, "acct-tie", "starter")
    now = int(time.time())
    h.double.update_subscription(
        old["id"], status="canceled", canceled_at=now, ended_at=now, created=now
    )
    deleted = event("customer.subscription.deleted", h.double.subscriptions[old["id"]])
    new = h.double.add_subscription(
        old["customer"], "price_business_monthly", metadata={"account_id": "acct-tie"}
    )
    h.double.update_subscription(new["id"], created=now)
    assert (await deliver(h, "customer.subscription.created", new))[0] == 200

    assert (await h.sender.post(deleted))[0] == 200  # the old one's cancellation, late

    assert await h.can_use("acct-tie", "slaGuarantee") == (True, "business")
    metrics = await AdminService(
        AdminStore(h.store), h.billing.service, default_catalog()
    ).revenue_metrics()
    assert dict(metrics.plan_distribution)["business"] == 1


async def test_an_invoice_paid_for_a_subscription_stripe_no_longer_has_is_still_counted(
    harness: Harness,
) -> None:
    # Money received is recorded even when its subscription is gone by the time the event
    # arrives (deleted with its customer): a 4xx would be retried for three days, then lost.
    h = harness
    _, sub = await subscribe(h, "acct-gone", "pro")
    invoice = h.double.invoice(sub["id"], paid=True)
    del h.double.subscriptions[sub["id"]]

    status, body = await deliver(h, "invoice.paid", invoice)

    assert (status, body["outcome"]) == (200, "processed")
    paid = await BillingStore(h.store).paid_invoices("acct-gone")
    assert [p.stripe_invoice_id for p in paid] == [invoice["id"]]
