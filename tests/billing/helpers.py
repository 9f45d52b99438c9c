"""Steps the billing tests share: check out, complete on Stripe's side, deliver the event."""

from __future__ import annotations

from typing import Any

from nchat.entitlements.v1 import billing_service_pb2 as pb
from nchat.entitlements.v1 import plan_pb2

from tests.billing.conftest import Harness
from tests.stripe_double import event

MONTH = plan_pb2.BILLING_INTERVAL_MONTH
YEAR = plan_pb2.BILLING_INTERVAL_YEAR


def checkout_request(account_id: str, plan_id: str = "starter", **kw: Any) -> Any:
    fields: dict[str, Any] = {
        "account_id": account_id,
        "plan_id": plan_id,
        "interval": MONTH,
        "user_id": "user-1",
        "user_email": "owner@example.com",
        "success_url": "https://nchat.example/billing/done?session={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://nchat.example/billing",
    }
    fields.update(kw)
    return pb.CreateCheckoutSessionRequest(**fields)


async def subscribe(
    h: Harness, account_id: str, plan_id: str = "starter", *, payment_status: str = "paid"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Checkout through the API, completed on Stripe, its event delivered: (session, sub)."""
    answer = await h.call("CreateCheckoutSession", checkout_request(account_id, plan_id))
    session, sub = h.double.complete_checkout(answer.session_id, payment_status=payment_status)
    status, body = await h.sender.post(event("checkout.session.completed", session))
    assert status == 200, body
    return session, sub


async def deliver(h: Harness, type_: str, obj: dict[str, Any], **kw: Any) -> tuple[int, Any]:
    return await h.sender.post(event(type_, obj, **kw))
