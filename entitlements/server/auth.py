"""Bearer-token authentication with per-caller scopes, checked by every method's handler."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import grpc
from grpc_status import rpc_status

from entitlements.config import Caller, token_digest
from entitlements.server.status import status_proto

log = logging.getLogger(__name__)

_PKG = "/nchat.entitlements.v1."

#: The scope each RPC needs. Methods not listed (health, reflection) need none.
METHOD_SCOPES: Mapping[str, str] = {
    **{
        f"{_PKG}EntitlementsService/{m}": "entitlements:read"
        for m in (
            "CanUseFeature",
            "CheckFeatures",
            "CheckMinimumPlan",
            "GetEntitlements",
            "GetUpgradePath",
            "ListPlans",
            "WatchEntitlements",
        )
    },
    f"{_PKG}UsageService/ReportUsage": "usage:write",
    f"{_PKG}UsageService/SetUsage": "usage:write",
    f"{_PKG}UsageService/CheckLimit": "usage:read",
    f"{_PKG}UsageService/GetUsage": "usage:read",
    f"{_PKG}TokenGateService/VerifyToken": "tokengate:read",
    f"{_PKG}TokenGateService/CheckChannelAccess": "tokengate:read",
    f"{_PKG}TokenGateService/ListTokenRequirements": "tokengate:read",
    f"{_PKG}TokenGateService/CreateTokenRequirement": "tokengate:write",
    f"{_PKG}TokenGateService/UpdateTokenRequirement": "tokengate:write",
    f"{_PKG}TokenGateService/DeleteTokenRequirement": "tokengate:write",
    f"{_PKG}TokenGateService/CreateWalletChallenge": "tokengate:write",
    f"{_PKG}TokenGateService/VerifyWalletOwnership": "tokengate:write",
    **{
        f"{_PKG}BillingService/{m}": "billing:write"
        for m in (
            "CreateCheckoutSession",
            "CreatePortalSession",
            "GetSubscription",
            "UpdateSubscription",
            "CancelSubscription",
            "ResumeSubscription",
        )
    },
    f"{_PKG}CryptoPaymentService/CreateCryptoPayment": "crypto:write",
    f"{_PKG}CryptoPaymentService/GetCryptoPayment": "crypto:read",
    f"{_PKG}CryptoPaymentService/GetTransactionStatus": "crypto:read",
    **{
        f"{_PKG}AdminService/{m}": "admin"
        for m in (
            "GetRevenueMetrics",
            "ListSubscriptions",
            "SetAccountOverrides",
            "ListUnsettledFunds",
            "ResolveUnsettledFunds",
            "ListEventDeliveries",
            "ReplayEvent",
            "ReplayFailedEvents",
            "CreateManualSubscription",
            "UpdateManualSubscription",
            "EndManualSubscription",
            "RecordManualInvoice",
            "ListAuditEntries",
        )
    },
}


def bearer_token(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return str(token.strip())
            return None
    return None


class Authenticator:
    """Refuses calls without a known token (UNAUTHENTICATED) or without the RPC's scope
    (PERMISSION_DENIED). The server's handlers ask it first, before the request is decoded:
    a refused caller's bytes are never parsed (and undecodable ones cannot turn the refusal
    into anything else)."""

    def __init__(self, callers: Mapping[bytes, Caller]) -> None:
        self._callers = callers
        # The refusals are few (per scope, and per caller and scope): built once each.
        self._refusals: dict[tuple[str, str], grpc.Status] = {}
        self._lock = threading.Lock()

    def caller_for(self, metadata: Any) -> Caller | None:
        token = bearer_token(metadata)
        if token is None:
            return None
        return self._callers.get(token_digest(token))

    def refusal(self, scope: str, metadata: Any) -> grpc.Status | None:
        """None when the call's caller has `scope`; else the status to answer."""
        # Looked up by the token's digest each call (about 3 us): remembering tokens would keep
        # the secrets in a table, which the digests exist to avoid.
        caller = self.caller_for(metadata)
        if caller is not None and scope in caller.scopes:
            return None
        key = (caller.name if caller is not None else "", scope)
        refusal = self._refusals.get(key)
        if refusal is None:
            if caller is None:
                code = grpc.StatusCode.UNAUTHENTICATED
                message = "send 'authorization: Bearer <token>' with a configured caller token"
                reason = "ERROR_REASON_UNAUTHENTICATED"
            else:
                code = grpc.StatusCode.PERMISSION_DENIED
                message = f"caller {caller.name!r} lacks the scope {scope!r} this method needs"
                reason = "ERROR_REASON_PERMISSION_DENIED"
            refusal = rpc_status.to_status(
                status_proto(code, message, reason=reason, metadata={"scope": scope})
            )
            with self._lock:
                self._refusals[key] = refusal
        return refusal
