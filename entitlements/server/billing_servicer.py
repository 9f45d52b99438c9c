"""BillingService: validate, call the billing domain (Stripe behind it), answer the subscription."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import grpc
from nchat.entitlements.v1 import billing_service_pb2 as pb
from nchat.entitlements.v1 import billing_service_pb2_grpc as pb_grpc
from nchat.entitlements.v1 import plan_pb2

from entitlements.billing import PAID_PLANS, Billing, CheckoutRequest, Interval
from entitlements.errors import InvalidArgument
from entitlements.policies import Catalog
from entitlements.server import convert
from entitlements.server.status import unary
from entitlements.server.validation import require_id

Ctx = grpc.aio.ServicerContext[Any, Any]

MAX_URL_LENGTH = 2048
MAX_KEY_LENGTH = 255  # Stripe's limit for idempotency keys

_INTERVALS: dict[int, Interval] = {
    plan_pb2.BILLING_INTERVAL_MONTH: "month",
    plan_pb2.BILLING_INTERVAL_YEAR: "year",
}


def _url(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > MAX_URL_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_URL_LENGTH} characters")
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or not value.isprintable():
        raise InvalidArgument(field, f"must be an absolute http(s) URL, got {value!r}")
    return value


def _interval(value: int, field: str, *, required: bool) -> Interval | None:
    if value == plan_pb2.BILLING_INTERVAL_UNSPECIFIED and not required:
        return None
    interval = _INTERVALS.get(value)
    if interval is None:
        raise InvalidArgument(field, "must be BILLING_INTERVAL_MONTH or BILLING_INTERVAL_YEAR")
    return interval


def _paid_plan(catalog: Catalog, plan_id: str, field: str) -> str:
    if not plan_id:
        raise InvalidArgument(field, "is required")
    catalog.plan(plan_id, field=field)  # UnknownPlan for a plan that does not exist
    if plan_id not in PAID_PLANS:
        raise InvalidArgument(
            field, f"plan {plan_id!r} cannot be bought by card: choose one of {PAID_PLANS}"
        )
    return plan_id


def _key(value: str, field: str) -> str | None:
    if not value:
        return None
    if len(value) > MAX_KEY_LENGTH or not value.isprintable():
        raise InvalidArgument(field, f"at most {MAX_KEY_LENGTH} printable characters")
    return value


def _email(value: str, field: str) -> str | None:
    if not value:
        return None
    local, at, domain = value.rpartition("@")
    if not at or not local or "." not in domain or len(value) > 320 or " " in value:
        raise InvalidArgument(field, f"not an e-mail address: {value!r}")
    return value


class BillingServicer(pb_grpc.BillingServiceServicer):
    def __init__(self, billing: Billing, catalog: Catalog) -> None:
        self._billing = billing
        self._catalog = catalog

    @unary
    async def CreateCheckoutSession(
        self, request: pb.CreateCheckoutSessionRequest, context: Ctx
    ) -> pb.CreateCheckoutSessionResponse:
        account_id = require_id(request.account_id, "account_id")
        plan_id = _paid_plan(self._catalog, request.plan_id, "plan_id")
        interval = _interval(request.interval, "interval", required=True)
        assert interval is not None
        session = await self._billing.create_checkout(
            CheckoutRequest(
                account_id=account_id,
                plan_id=plan_id,
                interval=interval,
                success_url=_url(request.success_url, "success_url"),
                cancel_url=_url(request.cancel_url, "cancel_url"),
                user_id=require_id(request.user_id, "user_id") if request.user_id else None,
                user_email=_email(request.user_email, "user_email"),
                idempotency_key=_key(request.idempotency_key, "idempotency_key"),
            )
        )
        return pb.CreateCheckoutSessionResponse(url=session.url or "", session_id=session.id)

    @unary
    async def CreatePortalSession(
        self, request: pb.CreatePortalSessionRequest, context: Ctx
    ) -> pb.CreatePortalSessionResponse:
        account_id = require_id(request.account_id, "account_id")
        return_url = _url(request.return_url, "return_url")
        url = await self._billing.create_portal(account_id, return_url)
        return pb.CreatePortalSessionResponse(url=url)

    @unary
    async def GetSubscription(
        self, request: pb.GetSubscriptionRequest, context: Ctx
    ) -> pb.GetSubscriptionResponse:
        account_id = require_id(request.account_id, "account_id")
        record = await self._billing.get_subscription(account_id)
        return pb.GetSubscriptionResponse(subscription=convert.subscription(record))

    @unary
    async def UpdateSubscription(
        self, request: pb.UpdateSubscriptionRequest, context: Ctx
    ) -> pb.UpdateSubscriptionResponse:
        account_id = require_id(request.account_id, "account_id")
        plan_id = _paid_plan(self._catalog, request.plan_id, "plan_id") if request.plan_id else None
        interval = _interval(request.interval, "interval", required=False)
        if plan_id is None and interval is None:
            raise InvalidArgument("plan_id", "give a new plan_id or interval (or both)")
        record = await self._billing.change_plan(
            account_id,
            plan_id=plan_id,
            interval=interval,
            idempotency_key=_key(request.idempotency_key, "idempotency_key"),
        )
        # The change was mirrored (and this replica's cache refreshed) before change_plan
        # returned, so the cached revision is the account's revision after it.
        ent = await self._billing.service.get(account_id)
        return pb.UpdateSubscriptionResponse(
            subscription=convert.subscription(record), revision=ent.revision
        )

    @unary
    async def CancelSubscription(
        self, request: pb.CancelSubscriptionRequest, context: Ctx
    ) -> pb.CancelSubscriptionResponse:
        account_id = require_id(request.account_id, "account_id")
        record = await self._billing.cancel(
            account_id,
            at_period_end=request.at_period_end,
            idempotency_key=_key(request.idempotency_key, "idempotency_key"),
        )
        return pb.CancelSubscriptionResponse(subscription=convert.subscription(record))

    @unary
    async def ResumeSubscription(
        self, request: pb.ResumeSubscriptionRequest, context: Ctx
    ) -> pb.ResumeSubscriptionResponse:
        account_id = require_id(request.account_id, "account_id")
        record = await self._billing.resume(
            account_id, idempotency_key=_key(request.idempotency_key, "idempotency_key")
        )
        return pb.ResumeSubscriptionResponse(subscription=convert.subscription(record))
