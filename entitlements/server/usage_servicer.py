"""UsageService: validate every event first (a bad one fails the batch, nothing written), then
hand the batch to the ledger and answer once it is durable."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from nchat.entitlements.v1 import plan_pb2
from nchat.entitlements.v1 import usage_service_pb2 as pb
from nchat.entitlements.v1 import usage_service_pb2_grpc as pb_grpc

from entitlements.errors import InvalidArgument
from entitlements.policies import Catalog, MetricInfo, check_limit, level_for
from entitlements.policies.thresholds import level_unchecked
from entitlements.server import convert
from entitlements.server.status import unary
from entitlements.server.validation import (
    require_count,
    require_id,
    require_min_revision,
    require_timestamp,
)
from entitlements.service import EntitlementService
from entitlements.state import AccountEntitlements
from entitlements.usage.ledger import (
    APPLIED,
    DUPLICATE,
    REFUSED,
    GaugeSet,
    Increment,
    Outcome,
    UsageLedger,
)
from entitlements.usage.periods import current_period, parse_period, period_of

Ctx = grpc.aio.ServicerContext[Any, Any]

MAX_EVENTS = 1000
#: Largest delta of one event and largest gauge value: far beyond any real usage, and far from
#: the 64-bit counters' limit, so no total can overflow.
MAX_AMOUNT = 10**12
MAX_KEY_BYTES = 200
FUTURE_TOLERANCE_MS = 5 * 60 * 1000
# An event older than the key retention window, less this margin, could be a retry whose key
# was already pruned: refusing it is what keeps "counted once" true.
RETENTION_MARGIN_MS = 60 * 60 * 1000

_new = tuple.__new__  # see entitlements.usage.ledger._new


def limit_answer(ent: AccountEntitlements, limit: str, current: int) -> pb.CheckLimitResponse:
    """The `CheckLimit` answer for `limit` of `ent` at usage `current` (the hot path keeps it
    serialized)."""
    result = check_limit(ent.effective.limits[limit], current)
    answer = pb.CheckLimitResponse(
        allowed=result.allowed,
        limit=result.limit or 0,
        current=result.current,
        percentage=result.percentage,
        level=_level(result.level),
        unlimited=result.unlimited,
        remaining=result.remaining or 0,
        plan_id=ent.plan_id,
        revision=ent.revision,
    )
    convert.stamp(answer.as_of, ent)
    return answer


def _level(level: int) -> plan_pb2.UsageLevel.ValueType:
    return plan_pb2.UsageLevel.ValueType(level)


def _percentage(current: int, limit: int | None) -> float:
    if limit is None:
        return 0.0
    if limit == 0:
        return 100.0
    return 100.0 * current / limit


class UsageServicer(pb_grpc.UsageServiceServicer):
    def __init__(self, ledger: UsageLedger, service: EntitlementService, catalog: Catalog) -> None:
        self._ledger = ledger
        self._service = service
        self._catalog = catalog
        # metric name -> (name, limit key, counted per month)
        self._metrics = {
            name: (info.name, info.limit_key, info.monthly)
            for name, info in catalog.metrics.items()
        }

    @unary
    async def ReportUsage(
        self, request: pb.ReportUsageRequest, context: Ctx
    ) -> pb.ReportUsageResponse:
        # The per-event path is lean on purpose (ingest's throughput is per-event Python): the
        # common event is checked and turned into a ledger operation inline, anything unusual
        # (an event time, a bad field) goes through `_event`, which validates it in full.
        events = request.events
        if not events:
            raise InvalidArgument("events", "send at least one event")
        require_count(events, "events", maximum=MAX_EVENTS)
        now_ms = int(time.time() * 1000)
        limits = await self._limits({ev.account_id for ev in events}, events, now_ms)
        metrics = self._metrics
        this_month = period_of(now_ms)
        increments: list[Increment] = []
        append = increments.append
        for i, ev in enumerate(events):
            metric = metrics.get(ev.metric)
            delta = ev.delta
            key = ev.idempotency_key
            if (
                metric is None
                or not 0 <= delta <= MAX_AMOUNT
                or not key
                or len(key) > MAX_KEY_BYTES
                or ev.HasField("occurred_at")
            ):
                append(self._event(i, ev, limits, now_ms))
                continue
            account_id = ev.account_id
            name, limit_key, monthly = metric
            append(
                _new(
                    Increment,
                    (
                        account_id,
                        name,
                        delta,
                        key,
                        this_month if monthly else "",
                        now_ms,
                        ev.enforce_limit,
                        limit_key,
                        limits[account_id][limit_key],
                    ),
                )
            )
        outcomes = await self._ledger.report(increments)
        return _answer(increments, outcomes)

    async def _limits(
        self, accounts: set[str], events: Sequence[pb.UsageEvent], now_ms: int
    ) -> dict[str, Mapping[str, int | None]]:
        """The plan limits of the batch's accounts (from the entitlement cache, mostly)."""
        for account_id in accounts:
            try:
                require_id(account_id, "account_id")
            except InvalidArgument:
                self._first_error(events, now_ms)
                raise
        # The cache's fresh entry without a coroutine per account (what `get` returns first).
        peek = self._service.cache.peek
        limits: dict[str, Mapping[str, int | None]] = {}
        for account_id in accounts:
            ent = peek(account_id) or await self._service.get(account_id)
            limits[account_id] = ent.effective.limits
        return limits

    def _first_error(self, events: Sequence[pb.UsageEvent], now_ms: int) -> None:
        """Raise the error of the first bad field, in event order and field order."""
        for i, ev in enumerate(events):
            require_id(ev.account_id, f"events[{i}].account_id")
            self._event(i, ev, None, now_ms)

    def _event(
        self,
        i: int,
        ev: pb.UsageEvent,
        limits: dict[str, Mapping[str, int | None]] | None,
        now_ms: int,
    ) -> Increment:
        """One event validated in full (`events[i]`), as a ledger operation; without `limits`
        only validated."""
        info = self._catalog.metrics.get(ev.metric) or self._catalog.metric(
            ev.metric, field=f"events[{i}].metric"
        )
        if not 0 <= ev.delta <= MAX_AMOUNT:
            raise InvalidArgument(
                f"events[{i}].delta", f"must be from 0 to {MAX_AMOUNT:,}, got {ev.delta}"
            )
        key = ev.idempotency_key
        if not key:
            raise InvalidArgument(f"events[{i}].idempotency_key", "is required")
        if len(key) > MAX_KEY_BYTES and len(key.encode()) > MAX_KEY_BYTES:
            raise InvalidArgument(f"events[{i}].idempotency_key", f"at most {MAX_KEY_BYTES} bytes")
        occurred_ms = now_ms
        if ev.HasField("occurred_at"):
            stamp = require_timestamp(ev.occurred_at, f"events[{i}].occurred_at")
            occurred_ms = stamp.ToMilliseconds()
            if occurred_ms > now_ms + FUTURE_TOLERANCE_MS:
                raise InvalidArgument(
                    f"events[{i}].occurred_at", "is more than 5 minutes in the future"
                )
            oldest_ms = (
                now_ms - int(self._ledger.key_retention_seconds * 1000) + RETENTION_MARGIN_MS
            )
            if occurred_ms < oldest_ms:
                raise InvalidArgument(
                    f"events[{i}].occurred_at",
                    "is older than the idempotency window; such an event cannot be "
                    "counted exactly once",
                )
        if limits is None:
            return _NO_INCREMENT
        return Increment(
            ev.account_id,
            info.name,
            ev.delta,
            key,
            period_of(occurred_ms) if info.monthly else "",
            occurred_ms,
            ev.enforce_limit,
            info.limit_key,
            limits[ev.account_id][info.limit_key],
        )

    @unary
    async def SetUsage(self, request: pb.SetUsageRequest, context: Ctx) -> pb.SetUsageResponse:
        account_id = require_id(request.account_id, "account_id")
        info = self._catalog.metric(request.metric, field="metric")
        if info.monthly:
            raise InvalidArgument(
                "metric",
                f"{info.name} is counted per month: report increments with ReportUsage; "
                "SetUsage sets gauges",
            )
        if not 0 <= request.value <= MAX_AMOUNT:
            raise InvalidArgument("value", f"must be from 0 to {MAX_AMOUNT:,}, got {request.value}")
        ent = await self._service.get(account_id)
        limit = ent.effective.limits[info.limit_key]
        outcome = await self._ledger.set_gauge(
            GaugeSet(account_id, info.name, request.value, info.limit_key, limit)
        )
        return pb.SetUsageResponse(usage=_metric_usage(info, outcome.total, limit, ""))

    @unary
    async def CheckLimit(
        self, request: pb.CheckLimitRequest, context: Ctx
    ) -> pb.CheckLimitResponse:
        account_id = require_id(request.account_id, "account_id")
        info = self._catalog.limit(request.limit, field="limit")
        min_revision = require_min_revision(request.min_revision, "min_revision")
        ent = await self._service.get(account_id, min_revision)
        if request.HasField("current"):
            current = request.current
            if current < 0:
                raise InvalidArgument("current", f"must be zero or more, got {current}")
        elif info.metric is None:
            raise InvalidArgument(
                "current", f"is required for {info.key}: the service tracks no usage for it"
            )
        else:
            period = current_period(self._service.now()) if info.monthly else ""
            current = await self._ledger.current((account_id, info.metric, period))
        return limit_answer(ent, info.key, current)

    @unary
    async def GetUsage(self, request: pb.GetUsageRequest, context: Ctx) -> pb.GetUsageResponse:
        account_id = require_id(request.account_id, "account_id")
        if request.period:
            period = parse_period(request.period, "period")
        else:
            period = current_period(self._service.now())
        ent = await self._service.get(account_id)
        values = await self._ledger.counters(account_id, period)
        response = pb.GetUsageResponse(account_id=account_id, period=period, plan_id=ent.plan_id)
        for info in self._catalog.metrics.values():
            metric_period = period if info.monthly else ""
            value = values.get((info.name, metric_period), 0)
            limit = ent.effective.limits[info.limit_key]
            response.metrics.append(_metric_usage(info, value, limit, metric_period))
        return response


_NO_INCREMENT = Increment("", "", 0, "", "", 0, False, "", None)

_STATUS_NUMBER = {
    APPLIED: pb.USAGE_EVENT_STATUS_APPLIED,
    DUPLICATE: pb.USAGE_EVENT_STATUS_DUPLICATE,
    REFUSED: pb.USAGE_EVENT_STATUS_REFUSED,
}


def _answer(increments: list[Increment], outcomes: list[Outcome]) -> pb.ReportUsageResponse:
    """The per-event results. Fields are set one by one (half the cost of keyword arguments),
    defaults left unset; the totals are the ledger's, so the level needs no argument checks."""
    response = pb.ReportUsageResponse()
    add = response.results.add
    status_number = _STATUS_NUMBER
    for inc, (status, total, period) in zip(increments, outcomes, strict=True):
        result = add()
        result.idempotency_key = inc[3]  # .key
        result.status = status_number[status]
        result.total = total
        limit = inc[8]  # .limit
        if limit is None:
            result.unlimited = True
        else:
            result.limit = limit
            result.percentage = _percentage(total, limit)
        result.level = _level(level_unchecked(total, limit))
        result.period = period
    return response


def _metric_usage(info: MetricInfo, value: int, limit: int | None, period: str) -> pb.MetricUsage:
    return pb.MetricUsage(
        metric=info.name,
        limit_key=info.limit_key,
        current=value,
        limit=limit or 0,
        unlimited=limit is None,
        percentage=_percentage(value, limit),
        level=_level(level_for(value, limit)),
        period=period,
        monthly=info.monthly,
    )


assert plan_pb2.USAGE_LEVEL_EXCEEDED == 4  # the policies' UsageLevel ints are the proto's
