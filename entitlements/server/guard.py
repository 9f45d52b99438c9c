"""Every request is decoded and its text checked before a handler sees it.

Bytes that are no message of the method's request type (grpc would answer UNKNOWN, with a
traceback in the log) and text that no store can hold (a NUL, which PostgreSQL text refuses,
would fail a whole group commit) are answered INVALID_ARGUMENT here, for every method at once.
The server's handlers receive the request's bytes (they are registered without a deserializer)
and decode them with `RequestGuard.decoder` only after authentication, so an anonymous caller's
bytes are never parsed and it learns nothing about the request. No interceptor: the decoding is
part of each method's handler (an interceptor costs every call a Python hop).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import grpc
from grpc_status import rpc_status

from entitlements.observability.logs import log_rpc
from entitlements.observability.metrics import rpc_metrics_for_path
from entitlements.observability.throttle import Throttle
from entitlements.server.status import error_status, status_proto
from entitlements.server.validation import MAX_TEXT_LENGTH, text_violation

__all__ = ["Decoder", "RequestGuard"]

log = logging.getLogger(__name__)

#: The methods of the published API; their requests' text is checked (health and reflection
#: requests are only decoded safely).
_API = "/nchat.entitlements.v1."

#: (the request's bytes, the call) -> the request; refusals end the call (abort raises).
Decoder = Callable[[bytes, grpc.ServicerContext], Any]


class RequestGuard:
    """Builds each method's decoder: undecodable requests and text no store can hold are
    answered INVALID_ARGUMENT before the handler runs; an undecodable request is logged in one
    line, at most `burst` lines at once and `per_minute` after that."""

    def __init__(self, *, burst: int = 10, per_minute: float = 10.0) -> None:
        self._throttle = Throttle(burst=burst, per_minute=per_minute)
        self._throttle_lock = threading.Lock()  # handler threads share the bucket

    def decoder(self, path: str, parse: Callable[[bytes], Any]) -> Decoder:
        """The decoder of `path`, whose requests `parse` (a message class's FromString) reads."""
        type_name = _type_name(parse)
        check_text = path.startswith(_API)
        metrics = rpc_metrics_for_path(path)

        def decode(raw: bytes, context: grpc.ServicerContext) -> Any:
            try:
                request = parse(raw)
            except Exception as exc:  # DecodeError, and whatever a deserializer may raise
                why = str(exc) or type(exc).__name__
                metrics.observe("INVALID_ARGUMENT", 0.0)
                self._log_undecodable(path, len(raw), why, context)
                context.abort_with_status(
                    rpc_status.to_status(
                        status_proto(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"the request is not a valid {type_name} message: {why}",
                            reason="ERROR_REASON_INVALID_ARGUMENT",
                        )
                    )
                )
                raise  # pragma: no cover - abort_with_status raises
            # A NUL in a string is a 0x00 byte on the wire and an overlong string makes a long
            # request, so most requests are cleared without walking their fields.
            if check_text and (b"\x00" in raw or len(raw) > MAX_TEXT_LENGTH):
                bad = text_violation(request)
                if bad is not None:
                    metrics.observe("INVALID_ARGUMENT", 0.0)
                    log_rpc(
                        metrics.service,
                        metrics.method,
                        "INVALID_ARGUMENT",
                        0.0,
                        context.invocation_metadata(),
                    )
                    context.abort_with_status(rpc_status.to_status(error_status(bad)))
            return request

        return decode

    def _log_undecodable(
        self, path: str, size: int, why: str, context: grpc.ServicerContext
    ) -> None:
        with self._throttle_lock:
            held_back = self._throttle.allow()
        if held_back is None:
            return
        log.warning(
            "undecodable request to %s from %s (%d bytes, answered INVALID_ARGUMENT): %s%s",
            path,
            context.peer(),
            size,
            why,
            f" ({held_back} more not logged)" if held_back else "",
        )


def _type_name(decode: Callable[[bytes], Any]) -> str:
    """The request type's name, from its deserializer (a message class's FromString)."""
    owner = getattr(decode, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "request"))
