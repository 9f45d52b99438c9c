"""Every request is decoded and its text checked before a handler sees it.

Bytes that are no message of the method's request type (grpc would answer UNKNOWN, with a
traceback in the log) and text that no store can hold (a NUL, which PostgreSQL text refuses,
would fail a whole group commit) are answered INVALID_ARGUMENT here, for every method at once.
The interceptor runs after authentication (it is installed after `AuthInterceptor`, whose
refusals never decode the request), so an anonymous caller learns nothing about the request.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.rpc import status_pb2

from entitlements.errors import InvalidArgument
from entitlements.observability.logs import log_rpc
from entitlements.observability.metrics import rpc_metrics_for_path
from entitlements.observability.throttle import Throttle
from entitlements.server.status import abort, error_status, status_proto
from entitlements.server.validation import MAX_TEXT_LENGTH, text_violation

__all__ = ["RequestGuard"]

log = logging.getLogger(__name__)

#: The methods of the published API; their requests' text is checked (health and reflection
#: requests are only decoded safely).
_API = "/nchat.entitlements.v1."

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    Ctx = grpc.aio.ServicerContext[Any, Any]


class _Undecodable:
    """What the safe deserializer hands the handler instead of raising."""

    __slots__ = ("size", "why")

    def __init__(self, size: int, why: str) -> None:
        self.size = size
        self.why = why


class _Refused:
    """A decoded request with text no store can hold."""

    __slots__ = ("error",)

    def __init__(self, error: InvalidArgument) -> None:
        self.error = error


class RequestGuard(grpc.aio.ServerInterceptor):
    """Refuses undecodable requests and text no store can hold with INVALID_ARGUMENT, before
    the handler runs; an undecodable request is logged in one line, at most `burst` lines at
    once and `per_minute` after that."""

    def __init__(self, *, burst: int = 10, per_minute: float = 10.0) -> None:
        self._throttle = Throttle(burst=burst, per_minute=per_minute)
        # path -> (the handler as registered, the guarded one): built once per method.
        self._guarded: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        path: str = handler_call_details.method
        known = self._guarded.get(path)
        if known is not None and known[0] is handler:
            return known[1]
        guarded = self._guard(handler, path)
        self._guarded[path] = (handler, guarded)
        return guarded

    def _guard(self, handler: Handler, path: str) -> Handler:
        decode = handler.request_deserializer
        assert decode is not None
        type_name = _type_name(decode)
        check_text = path.startswith(_API)
        metrics = rpc_metrics_for_path(path)

        def safe_decode(raw: bytes) -> Any:
            try:
                request = decode(raw)
            except Exception as exc:  # DecodeError, and whatever a deserializer may raise
                return _Undecodable(len(raw), str(exc) or type(exc).__name__)
            # A NUL in a string is a 0x00 byte on the wire and an overlong string makes a long
            # request, so most requests are cleared without walking their fields.
            if check_text and (b"\x00" in raw or len(raw) > MAX_TEXT_LENGTH):
                bad = text_violation(request)
                if bad is not None:
                    return _Refused(bad)
            return request

        def refusal(request: Any, context: Ctx) -> status_pb2.Status | None:
            if isinstance(request, _Undecodable):
                metrics.observe("INVALID_ARGUMENT", 0.0)
                self._log_undecodable(path, request, context)
                return status_proto(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"the request is not a valid {type_name} message: {request.why}",
                    reason="ERROR_REASON_INVALID_ARGUMENT",
                )
            if isinstance(request, _Refused):
                metrics.observe("INVALID_ARGUMENT", 0.0)
                log_rpc(
                    metrics.service,
                    metrics.method,
                    "INVALID_ARGUMENT",
                    0.0,
                    context.invocation_metadata(),
                )
                return error_status(request.error)
            return None

        kwargs: dict[str, Any] = {
            "request_deserializer": safe_decode,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            # grpc's stubs type behaviours as sync; on the aio server they are coroutines.
            unary: Any = handler.unary_unary

            async def guarded_unary(request: Any, context: Ctx) -> Any:
                refused = refusal(request, context)
                if refused is not None:
                    await abort(context, refused)
                return await unary(request, context)

            return grpc.unary_unary_rpc_method_handler(guarded_unary, **kwargs)
        stream: Any = handler.unary_stream
        assert stream is not None
        if inspect.isasyncgenfunction(stream):
            items_of = stream

            async def guarded_items(request: Any, context: Ctx) -> AsyncIterator[Any]:
                refused = refusal(request, context)
                if refused is not None:
                    await abort(context, refused)
                async with contextlib.aclosing(items_of(request, context)) as items:
                    async for item in items:
                        yield item

            return grpc.unary_stream_rpc_method_handler(guarded_items, **kwargs)

        async def guarded_writer(request: Any, context: Ctx) -> Any:  # writes with context.write
            refused = refusal(request, context)
            if refused is not None:
                await abort(context, refused)
            return await stream(request, context)

        return grpc.unary_stream_rpc_method_handler(guarded_writer, **kwargs)

    def _log_undecodable(self, path: str, request: _Undecodable, context: Ctx) -> None:
        held_back = self._throttle.allow()
        if held_back is None:
            return
        log.warning(
            "undecodable request to %s from %s (%d bytes, answered INVALID_ARGUMENT): %s%s",
            path,
            context.peer(),
            request.size,
            request.why,
            f" ({held_back} more not logged)" if held_back else "",
        )


def _type_name(decode: Callable[[bytes], Any]) -> str:
    """The request type's name, from its deserializer (a message class's FromString)."""
    owner = getattr(decode, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "request"))
