"""Card billing writes hand back the account's revision: a consistency token (`min_revision`)
for the caller's next check, on any replica."""

from __future__ import annotations

from nchat.entitlements.v1 import billing_service_pb2 as pb
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb

from tests.billing.conftest import Harness
from tests.billing.helpers import checkout_request, deliver
from tests.server.conftest import OPS


async def stored_revision(h: Harness, account_id: str) -> int:
    snapshot = await h.store.get_account_snapshot(account_id)
    return snapshot.revision if snapshot else 0


async def test_a_webhook_that_changes_the_account_answers_its_revision(
    lone_harness: Harness,
) -> None:
    h = lone_harness
    answer = await h.call("CreateCheckoutSession", checkout_request("acct-rev", "starter"))
    session, _ = h.double.complete_checkout(answer.session_id)
    status, body = await deliver(h, "checkout.session.completed", session)
    assert (status, body["outcome"]) == (200, "processed")
    assert body["revision"] == await stored_revision(h, "acct-rev") > 0


async def test_update_subscription_answers_the_revision_checks_can_demand(
    lone_harness: Harness,
) -> None:
    h = lone_harness
    answer = await h.call("CreateCheckoutSession", checkout_request("acct-up", "starter"))
    session, _ = h.double.complete_checkout(answer.session_id)
    await deliver(h, "checkout.session.completed", session)
    before = await stored_revision(h, "acct-up")

    updated = await h.call(
        "UpdateSubscription", pb.UpdateSubscriptionRequest(account_id="acct-up", plan_id="pro")
    )

    assert updated.revision == await stored_revision(h, "acct-up") > before
    check = await h.entitlements.CanUseFeature(
        ent_pb.CanUseFeatureRequest(
            account_id="acct-up", feature="advancedAnalytics", min_revision=updated.revision
        ),
        metadata=OPS,
    )
    assert (check.allowed, check.plan_id, check.revision) == (True, "pro", updated.revision)
