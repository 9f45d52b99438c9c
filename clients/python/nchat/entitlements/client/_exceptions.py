"""The client's exceptions, built from a gRPC status and its google.rpc error details.

Our exception hierarchy:

* EntitlementsError
  * InvalidArgument (`.field`)
  * NotFound
  * AlreadyExists
  * FailedPrecondition
  * Unauthenticated
  * PermissionDenied
  * Unavailable
    * DeadlineExceeded
    * Overloaded
  * Unimplemented
  * ServerError
* ReporterError
  * ReporterClosed
  * BufferFull

Every `EntitlementsError` carries the gRPC `code`, the server's `message`, the stable `reason`
of the `google.rpc.ErrorInfo` detail (an `ERROR_REASON_*` name, empty when the server sent none)
and its `metadata`. `Unavailable` and its subclasses are the ones worth retrying.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import grpc
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "AlreadyExists",
    "BufferFull",
    "DeadlineExceeded",
    "EntitlementsError",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "Overloaded",
    "PermissionDenied",
    "ReporterClosed",
    "ReporterError",
    "ServerError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
]

_STATUS_DETAILS_KEY = "grpc-status-details-bin"
_NO_METADATA: Mapping[str, str] = MappingProxyType({})


class EntitlementsError(Exception):
    """An RPC to the entitlements service failed."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
        self.metadata: Mapping[str, str] = (
            MappingProxyType(dict(metadata)) if metadata else _NO_METADATA
        )

    def __repr__(self) -> str:
        name, code = type(self).__name__, self.code.name
        return f"{name}({self.message!r}, code={code}, reason={self.reason!r})"


class InvalidArgument(EntitlementsError):
    """The request had a bad field; `field` names it (e.g. `feature`, `events[2].delta`)."""

    def __init__(
        self,
        message: str,
        *,
        field: str = "",
        code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT,
        reason: str = "ERROR_REASON_INVALID_ARGUMENT",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, reason=reason, metadata=metadata)
        self.field = field


class NotFound(EntitlementsError):
    """The named object does not exist (never for an account: unknown accounts are free)."""


class AlreadyExists(EntitlementsError):
    """An object with the same key exists, or an idempotency key was reused with another payload."""


class FailedPrecondition(EntitlementsError):
    """The request is valid but the current state forbids it."""


class Unauthenticated(EntitlementsError):
    """No valid bearer token was sent."""


class PermissionDenied(EntitlementsError):
    """The caller's token lacks the scope the RPC needs, or the one a field it set needs:
    `metadata["scope"]` names the scope and `metadata["field"]` the field (naming
    `wallet_addresses` in CheckChannelAccess needs `tokengate:trusted-wallets`)."""


class Unavailable(EntitlementsError):
    """The service (or a dependency of it) could not answer now; retry later with backoff."""


class DeadlineExceeded(Unavailable):
    """The call did not finish within its deadline."""


class Overloaded(Unavailable):
    """The server is past its in-flight limit (RESOURCE_EXHAUSTED)."""


class Unimplemented(EntitlementsError):
    """The RPC is part of the published API but the server does not implement it."""


class ServerError(EntitlementsError):
    """Any other status (INTERNAL, UNKNOWN, ABORTED, CANCELLED, ...)."""


class ReporterError(Exception):
    """A `UsageReporter` could not take an increment."""


class ReporterClosed(ReporterError):
    """The reporter is closed: `add()` after `close()`."""


class BufferFull(ReporterError):
    """The reporter's buffer stayed full for the whole `add()` timeout; nothing was added."""


_BY_CODE: Mapping[grpc.StatusCode, type[EntitlementsError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
}


def error_from_status(
    code: grpc.StatusCode, message: str, details: status_pb2.Status | None
) -> EntitlementsError:
    """The exception for a status `code` with its google.rpc.Status `details` (if any)."""
    reason = ""
    metadata: dict[str, str] = {}
    field = ""
    if details is not None:
        for packed in details.details:
            if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                packed.Unpack(info)
                reason = info.reason
                metadata.update(info.metadata)
            elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                packed.Unpack(bad)
                if bad.field_violations and not field:
                    field = bad.field_violations[0].field
        message = details.message or message
    cls = _BY_CODE.get(code, ServerError)
    if cls is InvalidArgument:
        return InvalidArgument(
            message,
            field=field or metadata.get("field", ""),
            code=code,
            reason=reason or "ERROR_REASON_INVALID_ARGUMENT",
            metadata=metadata,
        )
    return cls(message, code=code, reason=reason, metadata=metadata)


def error_from_rpc(error: grpc.RpcError) -> EntitlementsError:
    """The exception for a failed call (sync or asyncio), decoding `grpc-status-details-bin`."""
    call = error if isinstance(error, grpc.Call | grpc.aio.AioRpcError) else None
    if call is None:
        return ServerError(str(error))
    code = call.code() or grpc.StatusCode.UNKNOWN
    message = call.details() or code.name
    trailing = call.trailing_metadata() or ()
    return error_from_status(code, message, _status_details(trailing))


def _status_details(trailing: object) -> status_pb2.Status | None:
    for key, value in trailing:  # type: ignore[attr-defined]
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except Exception:  # a malformed detail must not hide the error itself
                return None
    return None
