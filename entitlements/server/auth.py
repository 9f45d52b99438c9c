"""Bearer-token authentication with per-caller scopes, as one server interceptor."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc

from entitlements.config import Caller, token_digest
from entitlements.observability.metrics import rpc_metrics_for_path
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


def _refusal(
    handler: grpc.RpcMethodHandler[Any, Any],
    code: grpc.StatusCode,
    message: str,
    reason: str,
    scope: str,
    path: str,
) -> grpc.RpcMethodHandler[Any, Any] | None:
    """A handler of the same shape as ``handler`` that only refuses (and counts the refusal in
    the RPC's metrics)."""
    from grpc_status import rpc_status

    rich = rpc_status.to_status(
        status_proto(code, message, reason=reason, metadata={"scope": scope})
    )
    metrics = rpc_metrics_for_path(path)

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        metrics.observe(code.name, 0.0)
        await context.abort(rich.code, rich.details, rich.trailing_metadata)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        metrics.observe(code.name, 0.0)
        await context.abort(rich.code, rich.details, rich.trailing_metadata)
        yield  # pragma: no cover - makes this an async generator

    # The request is not decoded: a refused caller's bytes are never parsed (and undecodable
    # ones cannot turn the refusal into UNKNOWN).
    kwargs = {"request_deserializer": None, "response_serializer": handler.response_serializer}
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, **kwargs)
    return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a known token (UNAUTHENTICATED) or without the RPC's scope
    (PERMISSION_DENIED) before the handler runs."""

    def __init__(self, callers: Mapping[bytes, Caller]) -> None:
        self._callers = callers

    def caller_for(self, metadata: Any) -> Caller | None:
        token = bearer_token(metadata)
        if token is None:
            return None
        return self._callers.get(token_digest(token))

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        scope = METHOD_SCOPES.get(handler_call_details.method)
        if scope is None or handler is None:
            return handler
        caller = self.caller_for(handler_call_details.invocation_metadata)
        if caller is None:
            return _refusal(
                handler,
                grpc.StatusCode.UNAUTHENTICATED,
                "send 'authorization: Bearer <token>' with a configured caller token",
                "ERROR_REASON_UNAUTHENTICATED",
                scope,
                handler_call_details.method,
            )
        if scope not in caller.scopes:
            return _refusal(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                f"caller {caller.name!r} lacks the scope {scope!r} this method needs",
                "ERROR_REASON_PERMISSION_DENIED",
                scope,
                handler_call_details.method,
            )
        return handler
