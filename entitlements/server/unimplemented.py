"""Services of the published API whose implementation has not landed: every RPC answers
UNIMPLEMENTED, naming what is missing. Never a fake answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from entitlements.server.status import abort_with

#: What each not-yet-built service is waiting for.
MISSING: dict[str, str] = {
    "BillingService": "Stripe billing (checkout, portal, webhooks, reconciliation) "
    "is not built yet",
    "CryptoPaymentService": "crypto payments (quotes, chain watcher, confirmations) "
    "are not built yet",
    "AdminService": "admin analytics (revenue metrics, subscription listing, overrides) "
    "is not built yet",
    "TokenGateService": "token gating on chains (balance reads, SIWE wallet links) "
    "is not built yet",
    "UsageService": "usage metering (ReportUsage, SetUsage, CheckLimit, GetUsage) is not built yet",
}


def unimplemented_servicer(descriptor: ServiceDescriptor, base: type[Any], missing: str) -> Any:
    """An instance of the generated ``base`` servicer whose every method refuses."""
    attrs: dict[str, Callable[..., Any]] = {}
    for method in descriptor.methods:
        text = f"{descriptor.name}.{method.name} is not implemented in this version: {missing}"
        meta = {"missing": descriptor.full_name, "method": method.name}
        if method.server_streaming:
            attrs[method.name] = _streaming(text, meta)
        else:
            attrs[method.name] = _unary(text, meta)
    cls = type(f"Unimplemented{descriptor.name}", (base,), attrs)
    return cls()


def _unary(text: str, meta: dict[str, str]) -> Callable[..., Any]:
    async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await abort_with(
            context,
            grpc.StatusCode.UNIMPLEMENTED,
            text,
            reason="ERROR_REASON_NOT_IMPLEMENTED",
            metadata=meta,
        )

    return handler


def _streaming(text: str, meta: dict[str, str]) -> Callable[..., Any]:
    async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await abort_with(
            context,
            grpc.StatusCode.UNIMPLEMENTED,
            text,
            reason="ERROR_REASON_NOT_IMPLEMENTED",
            metadata=meta,
        )
        yield  # pragma: no cover

    return handler
