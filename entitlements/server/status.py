"""The one place domain errors become gRPC statuses with google.rpc error details."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from entitlements.errors import (
    AlreadyExists,
    EntitlementsError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from entitlements.observability.in_flight import Budgets, InFlight
from entitlements.observability.logs import log_rpc, slow_call_seconds
from entitlements.observability.metrics import rpc_metrics

log = logging.getLogger(__name__)

#: google.rpc.ErrorInfo.domain of every error this service returns.
ERROR_DOMAIN = "entitlements.nchat.v1"

_CODES: tuple[tuple[type[EntitlementsError], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
)


def code_for(exc: EntitlementsError) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def status_proto(
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str,
    metadata: dict[str, str] | None = None,
    field: str | None = None,
    field_description: str | None = None,
) -> status_pb2.Status:
    """A google.rpc.Status with ErrorInfo (and BadRequest when a field is named)."""
    details = []
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata or {})
    if field is not None:
        info.metadata["field"] = field
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=field, description=field_description or message
                )
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad)
        details.append(packed)
    packed_info = any_pb2.Any()
    packed_info.Pack(info)
    details.append(packed_info)
    return status_pb2.Status(code=code.value[0], message=message, details=details)


def error_status(exc: EntitlementsError) -> status_pb2.Status:
    """The rich status for a domain error."""
    if isinstance(exc, InvalidArgument):
        return status_proto(
            grpc.StatusCode.INVALID_ARGUMENT,
            exc.message,
            reason=exc.reason,
            field=exc.field,
            field_description=exc.description,
        )
    # Errors about one request field that is not malformed (a scope it needs, a contract that
    # is not the token) name it too; their ErrorInfo carries what they are about.
    field: str | None = getattr(exc, "field", None)
    return status_proto(
        code_for(exc),
        exc.message,
        reason=exc.reason,
        metadata=exc.metadata or None,
        field=field,
        field_description=getattr(exc, "description", None) if field else None,
    )


async def abort(context: grpc.aio.ServicerContext[Any, Any], status: status_pb2.Status) -> NoReturn:
    rich = rpc_status.to_status(status)
    await context.abort(rich.code, rich.details, rich.trailing_metadata)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


async def abort_with(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str,
    metadata: dict[str, str] | None = None,
) -> NoReturn:
    await abort(context, status_proto(code, message, reason=reason, metadata=metadata))


Req = TypeVar("Req")
Resp = TypeVar("Resp")
Self = TypeVar("Self")
Handler = Callable[[Self, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]


#: The RPCs that change nothing: they spend the reads budget (the hot-path checks are among
#: them); every other unary RPC spends the writes budget. A new RPC is a write until listed here.
READ_METHODS = frozenset(
    {
        "CanUseFeature",
        "CheckFeatures",
        "CheckMinimumPlan",
        "GetEntitlements",
        "GetUpgradePath",
        "ListPlans",
        "CheckLimit",
        "GetUsage",
        "VerifyToken",
        "CheckChannelAccess",
        "ListTokenRequirements",
        "GetSubscription",
        "GetCryptoPayment",
        "GetTransactionStatus",
        "GetRevenueMetrics",
        "ListSubscriptions",
    }
)


@functools.cache
def _refusal(budget: InFlight) -> grpc.Status:
    """RESOURCE_EXHAUSTED (ErrorInfo reason OVERLOADED, a QuotaFailure) for a full budget."""
    what = f"more than {budget.limit} {budget.kind} in flight"
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(
            reason="ERROR_REASON_OVERLOADED",
            domain=ERROR_DOMAIN,
            metadata={"max_in_flight": str(budget.limit), "budget": budget.kind},
        )
    )
    quota = any_pb2.Any()
    quota.Pack(
        error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=f"server:{budget.kind}",
                    description=f"{what}; retry with backoff",
                )
            ]
        )
    )
    refusal: grpc.Status = rpc_status.to_status(
        status_pb2.Status(
            code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
            message=f"overloaded: {what}; retry with backoff",
            details=[info, quota],
        )
    )
    return refusal


#: The answer to a call that arrives while the server shuts down: retryable, never CANCELLED.
_CLOSING: grpc.Status = rpc_status.to_status(
    status_proto(
        grpc.StatusCode.UNAVAILABLE,
        "the server is shutting down; retry (another replica or the restarted server answers)",
        reason="ERROR_REASON_DEPENDENCY_UNAVAILABLE",
        metadata={"dependency": "server", "state": "shutting_down"},
    )
)


def unary(fn: Handler[Self, Req, Resp]) -> Handler[Self, Req, Resp]:
    """Wrap a unary handler: load shedding (when the servicer has `in_flight` budgets; a read
    spends the reads budget, anything else the writes budget), domain errors become their
    status, anything else INTERNAL."""

    # Metric children are bound per method here and per code on first use, so the hot path pays
    # one dict lookup, two increments and two clock reads (entitlements/observability/).
    metrics = rpc_metrics(fn.__qualname__)
    reads = metrics.method in READ_METHODS

    @functools.wraps(fn)
    async def wrapper(
        self: Self, request: Req, context: grpc.aio.ServicerContext[Req, Resp]
    ) -> Resp:
        start = perf_counter()
        budgets: Budgets | None = getattr(self, "in_flight", None)
        in_flight = None
        if budgets is not None:
            if budgets.closing:
                budgets.refuse_closing()
                metrics.observe("UNAVAILABLE", perf_counter() - start)
                await context.abort(_CLOSING.code, _CLOSING.details, _CLOSING.trailing_metadata)
            budget = budgets.reads if reads else budgets.writes
            if not budgets.enter(budget):
                metrics.observe("RESOURCE_EXHAUSTED", perf_counter() - start)
                refusal = _refusal(budget)
                await context.abort(refusal.code, refusal.details, refusal.trailing_metadata)
            in_flight = budget
        code = "OK"
        try:
            return await fn(self, request, context)
        except EntitlementsError as exc:
            code = code_for(exc).name
            await abort(context, error_status(exc))
        except grpc.aio.AbortError:
            code = _aborted_code(context)
            raise
        except Exception:
            code = "INTERNAL"
            log.exception("unhandled error in %s", fn.__qualname__)
            await abort(
                context,
                status_proto(
                    grpc.StatusCode.INTERNAL,
                    "internal error; it has been logged",
                    reason="ERROR_REASON_UNSPECIFIED",
                ),
            )
        finally:
            if in_flight is not None:
                budgets.leave(in_flight)  # type: ignore[union-attr]
            elapsed = perf_counter() - start
            metrics.observe(code, elapsed)
            if code != "OK" or elapsed >= slow_call_seconds():
                log_rpc(
                    metrics.service, metrics.method, code, elapsed, context.invocation_metadata()
                )

    return wrapper


def _aborted_code(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The code a handler aborted with (it called context.abort itself)."""
    try:
        code = context.code()
    except Exception:
        return "UNKNOWN"
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        for member in grpc.StatusCode:
            if member.value[0] == code:
                return member.name
    return "UNKNOWN"


#: Kept for readers of the numeric codes in google.rpc.Status.
assert grpc.StatusCode.INVALID_ARGUMENT.value[0] == code_pb2.INVALID_ARGUMENT
