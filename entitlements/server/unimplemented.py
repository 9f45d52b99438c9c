"""Services of the published API that this server does not serve (not built, or not enabled
by its configuration, e.g. BillingService without Stripe): every RPC answers UNIMPLEMENTED
saying why. Never a fake answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from entitlements.server.status import abort_with

#: Why a service of the published API is not served, when nothing more specific was said.
NOT_BUILT = "it is not built in this version"


def unimplemented_servicer(descriptor: ServiceDescriptor, base: type[Any], missing: str) -> Any:
    """An instance of the generated ``base`` servicer whose every method refuses."""
    attrs: dict[str, Callable[..., Any]] = {}
    for method in descriptor.methods:
        text = f"{descriptor.name}.{method.name} is not served: {missing}"
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
