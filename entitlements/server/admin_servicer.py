"""AdminService: revenue metrics, the subscription listing, audited account overrides and the
crypto money received without access (listed and resolved); the manual subscriptions and the
audit log are in `sales_admin_servicer`, the outbound events in `events_admin_servicer`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from nchat.entitlements.v1 import admin_service_pb2 as pb
from nchat.entitlements.v1 import admin_service_pb2_grpc as pb_grpc
from nchat.entitlements.v1 import subscription_pb2

from entitlements.admin import AdminService, LimitRequest, OverridesRequest
from entitlements.admin.audit import AuditLog
from entitlements.admin.metrics import RevenueMetrics
from entitlements.admin.sales import ManualBilling
from entitlements.admin.service import StoredOverrides
from entitlements.config import Caller
from entitlements.crypto.funds import Credit, FundsFilter, Refund, UnsettledFunds
from entitlements.errors import FailedPrecondition, InvalidArgument
from entitlements.server import convert
from entitlements.server.auth import Authenticator
from entitlements.server.events_admin_servicer import EventsAdminMethods
from entitlements.server.funds_convert import funds_message, interval_of, kind_of
from entitlements.server.sales_admin_servicer import SalesAdminMethods
from entitlements.server.status import unary
from entitlements.server.validation import require_id
from entitlements.store.admin_repository import AdminStore
from entitlements.store.audit_repository import AuditStore
from entitlements.store.crypto_funds_repository import FundsStore
from entitlements.store.manual_repository import ManualStore

if TYPE_CHECKING:
    from entitlements.config import Settings
    from entitlements.server.deps import Deps

__all__ = ["AdminServicer", "install_admin", "metrics_response"]

Ctx = grpc.aio.ServicerContext[Any, Any]

#: The caller recorded in the audit log when authentication is off.
DEV_ACTOR = "dev"

_STATUS_NAMES = {value: name for name, value in convert.STATUSES.items()}


def metrics_response(m: RevenueMetrics) -> pb.GetRevenueMetricsResponse:
    return pb.GetRevenueMetricsResponse(
        total_revenue_cents=m.total_revenue_cents,
        mrr_cents=m.mrr_cents,
        arr_cents=m.arr_cents,
        active_subscriptions=m.active_subscriptions,
        churn_rate=m.churn_rate,
        plan_distribution=[pb.PlanCount(plan_id=p, count=n) for p, n in m.plan_distribution],
        payment_method_breakdown=[
            pb.PaymentMethodRevenue(
                payment_method=convert.PAYMENT_METHODS[b.payment_method],
                revenue_cents=b.revenue_cents,
                payments=b.payments,
                active_subscriptions=b.active_subscriptions,
            )
            for b in m.payment_methods
        ],
        failed_payments=pb.FailedPayments(
            count=m.failed_payments.count, amount_cents=m.failed_payments.amount_cents
        ),
        upcoming_renewals=[
            pb.UpcomingRenewal(
                account_id=r.account_id,
                plan_id=r.plan_id,
                renews_at=convert.timestamp(r.renews_at),
                amount_cents=r.amount_cents,
            )
            for r in m.upcoming_renewals
        ],
        as_of=convert.timestamp(m.as_of),
    )


def _overrides_message(stored: StoredOverrides) -> pb.AccountOverrides:
    return pb.AccountOverrides(
        account_id=stored.account_id,
        limits=[
            pb.LimitOverride(key=k, unlimited=v is None, value=v or 0)
            for k, v in sorted(stored.limits.items())
        ],
        granted_features=stored.granted_features,
        revoked_features=stored.revoked_features,
        expires_at=convert.timestamp(stored.expires_at),
        reason=stored.reason,
    )


def _time(value: Timestamp, field: str) -> datetime:
    """A Timestamp as an aware datetime; INVALID_ARGUMENT naming `field` if it is not one."""
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(
            field, "is not a valid timestamp (0001-01-01 to 9999-12-31, nanos 0 to 999999999)"
        ) from None


class AdminServicer(EventsAdminMethods, SalesAdminMethods, pb_grpc.AdminServiceServicer):
    """Thin: validate the request's shape, call `AdminService`, convert the answer."""

    def __init__(self, admin: AdminService, callers: Mapping[bytes, Caller] | None) -> None:
        self._admin = admin
        self._funds = admin.funds
        # None in dev mode: every change is audited as made by "dev".
        self._auth = Authenticator(callers) if callers is not None else None

    def _actor(self, context: Ctx) -> str:
        if self._auth is None:
            return DEV_ACTOR
        caller = self._auth.caller_for(context.invocation_metadata())
        # The interceptor refused unknown callers before the handler ran.
        return caller.name if caller is not None else "unknown"

    @unary
    async def GetRevenueMetrics(
        self, request: pb.GetRevenueMetricsRequest, context: Ctx
    ) -> pb.GetRevenueMetricsResponse:
        as_of = _time(request.as_of, "as_of") if request.HasField("as_of") else None
        metrics = await self._admin.revenue_metrics(
            as_of=as_of, churn_window_days=request.churn_window_days
        )
        return metrics_response(metrics)

    @unary
    async def ListSubscriptions(
        self, request: pb.ListSubscriptionsRequest, context: Ctx
    ) -> pb.ListSubscriptionsResponse:
        status: str | None = None
        if request.status != subscription_pb2.SUBSCRIPTION_STATUS_UNSPECIFIED:
            status = _STATUS_NAMES.get(request.status)
            if status is None or status == "none":
                raise InvalidArgument("status", "is not a status a subscription can have")
        records, token = await self._admin.list_subscriptions(
            page_size=request.page_size,
            page_token=request.page_token,
            status=status,
            plan_id=request.plan_id or None,
        )
        return pb.ListSubscriptionsResponse(
            subscriptions=[convert.subscription(r) for r in records], next_page_token=token
        )

    @unary
    async def SetAccountOverrides(
        self, request: pb.SetAccountOverridesRequest, context: Ctx
    ) -> pb.SetAccountOverridesResponse:
        o = request.overrides
        require_id(o.account_id, "overrides.account_id")
        stored = await self._admin.set_overrides(
            OverridesRequest(
                account_id=o.account_id,
                limits=[
                    LimitRequest(key=x.key, unlimited=x.unlimited, value=x.value) for x in o.limits
                ],
                granted_features=list(o.granted_features),
                revoked_features=list(o.revoked_features),
                expires_at=_time(o.expires_at, "overrides.expires_at")
                if o.HasField("expires_at")
                else None,
                reason=o.reason,
            ),
            actor=self._actor(context),
        )
        return pb.SetAccountOverridesResponse(
            overrides=_overrides_message(stored), revision=stored.revision
        )

    def _unsettled(self) -> UnsettledFunds:
        if self._funds is None:
            raise FailedPrecondition("crypto payments are not configured on this server")
        return self._funds

    @unary
    async def ListUnsettledFunds(
        self, request: pb.ListUnsettledFundsRequest, context: Ctx
    ) -> pb.ListUnsettledFundsResponse:
        funds = self._unsettled()
        rows, token = await funds.list(
            page_size=request.page_size,
            page_token=request.page_token,
            filters=FundsFilter(
                kind=kind_of(request.kind),
                network=request.network or None,
                account_id=request.account_id or None,
                include_resolved=request.include_resolved,
            ),
        )
        return pb.ListUnsettledFundsResponse(
            funds=[funds_message(r, await funds.decimals(r)) for r in rows],
            next_page_token=token,
        )

    @unary
    async def ResolveUnsettledFunds(
        self, request: pb.ResolveUnsettledFundsRequest, context: Ctx
    ) -> pb.ResolveUnsettledFundsResponse:
        funds = self._unsettled()
        require_id(request.id, "id")
        action = request.WhichOneof("action")
        credit = refund = None
        if action == "credit":
            c = request.credit
            credit = Credit(
                account_id=require_id(c.account_id, "credit.account_id") if c.account_id else "",
                plan_id=c.plan_id,
                interval=interval_of(c.interval, "credit.interval"),
            )
        elif action == "refund":
            refund = Refund(tx_hash=request.refund.tx_hash)
        row, revision = await funds.resolve(
            request.id,
            credit=credit,
            refund=refund,
            reason=request.reason,
            actor=self._actor(context),
        )
        return pb.ResolveUnsettledFundsResponse(
            funds=funds_message(row, await funds.decimals(row)), revision=revision
        )


def install_admin(settings: Settings, deps: Deps) -> AdminService:
    """Build the admin domain on `deps.store` and register AdminService's servicer."""
    funds = None
    if deps.crypto is not None:
        funds = UnsettledFunds(deps.crypto.payments, FundsStore(deps.store.engine))
    admin = AdminService(
        AdminStore(deps.store),
        deps.service,
        deps.catalog,
        past_due_grace=settings.past_due_grace,
        clock=deps.service.now,
        funds=funds,
    )
    servicer = AdminServicer(admin, None if settings.dev_mode else settings.callers)
    servicer.manual_billing = ManualBilling(
        deps.service,
        ManualStore(deps.store.engine),
        AuditStore(deps.store.engine),
        deps.catalog,
        clock=deps.service.now,
    )
    servicer.audit_log = AuditLog(AuditStore(deps.store.engine))
    deps.servicers["AdminService"] = servicer
    return admin
