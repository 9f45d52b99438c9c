"""EntitlementsService: validate, ask the domain, answer; every check is served from the cache."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from time import perf_counter
from typing import Any

import grpc
from nchat.entitlements.v1 import entitlements_service_pb2 as pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as pb_grpc
from nchat.entitlements.v1 import plan_pb2

from entitlements.errors import EntitlementsError, InvalidArgument, StaleRevision
from entitlements.observability.in_flight import Budgets
from entitlements.observability.metrics import rpc_metrics_for
from entitlements.policies import Catalog, FeatureDecision, get_upgrade_path, meets_minimum_plan
from entitlements.server import convert
from entitlements.server.status import abort, abort_with, error_status, unary
from entitlements.server.validation import (
    MAX_ID_LENGTH,
    require_count,
    require_id,
    require_min_revision,
)
from entitlements.service import EntitlementService
from entitlements.state import AccountEntitlements
from entitlements.watch import (
    SubscriberOverflow,
    TokenAccessChanged,
    WatchClosed,
    WatchEvent,
)

log = logging.getLogger(__name__)

Ctx = grpc.aio.ServicerContext[Any, Any]

#: Watch streams are counted when they end, by how they ended, with how long they lasted.
_WATCH_METRICS = rpc_metrics_for("EntitlementsService", "WatchEntitlements")

MAX_CHECKS = 1000
MAX_WATCHED_ACCOUNTS = 10_000

_MESSAGES = {
    "INCLUDED_IN_PLAN": "the {plan} plan includes {feature}",
    "GRANTED_BY_OVERRIDE": "{feature} is granted to this account by an override",
    "REVOKED_BY_OVERRIDE": "{feature} is revoked for this account by an override",
    "FEATURE_NOT_IN_PLAN": "the {plan} plan does not include {feature}",
}


_message_cache: dict[tuple[str, str, str, str], str] = {}


def _message(feature: str, decision: FeatureDecision) -> str:
    """The human explanation of a decision; there are few distinct ones, so they are kept."""
    key = (feature, decision.reason, decision.plan_id, decision.upgrade_plan_id)
    message = _message_cache.get(key)
    if message is None:
        message = _MESSAGES[decision.reason].format(plan=decision.plan_id, feature=feature)
        if decision.upgrade_plan_id:
            message += f"; upgrade to {decision.upgrade_plan_id}"
        if len(_message_cache) < 100_000:
            _message_cache[key] = message
    return message


def feature_answer(
    feature: str, decision: FeatureDecision, ent: AccountEntitlements
) -> pb.CanUseFeatureResponse:
    answer = pb.CanUseFeatureResponse(
        allowed=decision.allowed,
        plan_id=decision.plan_id,
        upgrade_plan_id=decision.upgrade_plan_id,
        reason=convert.REASONS[decision.reason],
        revision=ent.revision,
        message=_message(feature, decision),
    )
    convert.stamp(answer.as_of, ent)
    return answer


def minimum_plan_answer(
    catalog: Catalog, ent: AccountEntitlements, minimum_plan_id: str
) -> pb.CheckMinimumPlanResponse:
    answer = pb.CheckMinimumPlanResponse(
        allowed=meets_minimum_plan(catalog, ent.plan_id, minimum_plan_id),
        plan_id=ent.plan_id,
        revision=ent.revision,
    )
    convert.stamp(answer.as_of, ent)
    return answer


def entitlements_answer(catalog: Catalog, ent: AccountEntitlements) -> pb.GetEntitlementsResponse:
    answer = pb.GetEntitlementsResponse(entitlements=convert.entitlements(catalog, ent))
    convert.stamp(answer.as_of, ent)
    return answer


class EntitlementsServicer(pb_grpc.EntitlementsServiceServicer):
    in_flight: Budgets | None = None

    def __init__(
        self, service: EntitlementService, catalog: Catalog, *, max_watchers: int = 10_000
    ) -> None:
        self._service = service
        self._catalog = catalog
        self._max_watchers = max_watchers
        self._plans = pb.ListPlansResponse(
            plans=[convert.plan(catalog, p) for p in catalog.plans],
            features=[
                plan_pb2.Feature(
                    key=f.key,
                    name=f.name,
                    description=f.description,
                    minimum_plan_id=f.minimum_plan_id,
                )
                for f in catalog.features.values()
            ],
        )

    @unary
    async def CanUseFeature(
        self, request: pb.CanUseFeatureRequest, context: Ctx
    ) -> pb.CanUseFeatureResponse:
        account_id = require_id(request.account_id, "account_id")
        feature = request.feature
        self._catalog.feature(feature, field="feature")
        min_revision = require_min_revision(request.min_revision, "min_revision")
        ent = await self._service.get(account_id, min_revision)
        return feature_answer(feature, ent.effective.can_use(feature), ent)

    @unary
    async def CheckFeatures(
        self, request: pb.CheckFeaturesRequest, context: Ctx
    ) -> pb.CheckFeaturesResponse:
        checks = request.checks
        require_count(checks, "checks", maximum=MAX_CHECKS)
        peek = self._service.cache.peek
        # Each distinct account once: from the cache, or loaded concurrently with the others
        # (read through to the database when a check's min_revision is newer than the cache).
        accounts: dict[str, AccountEntitlements | EntitlementsError | None] = {}
        needed: dict[str, int] = {}
        missing = []
        for check in checks:
            account_id = check.account_id
            wanted = check.min_revision
            if wanted and wanted > needed.get(account_id, 0):
                needed[account_id] = wanted
            if account_id not in accounts:
                ent = peek(account_id) if _valid_id(account_id) else None
                accounts[account_id] = ent
                if ent is None and _valid_id(account_id):
                    missing.append(account_id)
        for account_id, revision in needed.items():
            cached = accounts[account_id]
            if isinstance(cached, AccountEntitlements) and cached.revision < revision:
                missing.append(account_id)
        if missing:
            results = await asyncio.gather(
                *(self._at_least(a, needed.get(a, 0)) for a in missing), return_exceptions=True
            )
            for account_id, result in zip(missing, results, strict=True):
                if not isinstance(result, EntitlementsError | AccountEntitlements):
                    raise result
                accounts[account_id] = result
        features = self._catalog.features
        response = pb.CheckFeaturesResponse()
        add = response.results.add
        for i, check in enumerate(checks):
            feature = check.feature
            found = accounts[check.account_id]
            if (
                isinstance(found, AccountEntitlements)
                and feature in features
                and 0 <= check.min_revision <= found.revision
            ):
                decision = found.effective.decisions.get(feature)
                if decision is not None:
                    add(item=feature_answer(feature, decision, found))
                    continue
            try:  # the slow path names what is wrong with this check
                require_id(check.account_id, f"checks[{i}].account_id")
                self._catalog.feature(feature, field=f"checks[{i}].feature")
                require_min_revision(check.min_revision, f"checks[{i}].min_revision")
                if isinstance(found, EntitlementsError):
                    raise found
                if isinstance(found, AccountEntitlements) and found.revision < check.min_revision:
                    raise StaleRevision(check.account_id, check.min_revision, found.revision)
                raise AssertionError(f"check {i} has no decision")  # pragma: no cover
            except EntitlementsError as exc:
                add(error=error_status(exc))
        return response

    async def _at_least(self, account_id: str, min_revision: int) -> AccountEntitlements:
        """The account at `min_revision` or later; if the database has not reached it, the
        cached state (checks of the account asking for less still get their answer)."""
        try:
            return await self._service.get(account_id, min_revision)
        except StaleRevision:
            return await self._service.get(account_id)

    @unary
    async def CheckMinimumPlan(
        self, request: pb.CheckMinimumPlanRequest, context: Ctx
    ) -> pb.CheckMinimumPlanResponse:
        account_id = require_id(request.account_id, "account_id")
        minimum = self._catalog.plan(request.minimum_plan_id, field="minimum_plan_id")
        min_revision = require_min_revision(request.min_revision, "min_revision")
        ent = await self._service.get(account_id, min_revision)
        return minimum_plan_answer(self._catalog, ent, minimum.id)

    @unary
    async def GetEntitlements(
        self, request: pb.GetEntitlementsRequest, context: Ctx
    ) -> pb.GetEntitlementsResponse:
        account_id = require_id(request.account_id, "account_id")
        min_revision = require_min_revision(request.min_revision, "min_revision")
        ent = await self._service.get(account_id, min_revision)
        return entitlements_answer(self._catalog, ent)

    @unary
    async def GetUpgradePath(
        self, request: pb.GetUpgradePathRequest, context: Ctx
    ) -> pb.GetUpgradePathResponse:
        plan = self._catalog.plan(request.plan_id, field="plan_id")
        feature = self._catalog.feature(request.feature, field="feature")
        if feature.key in plan.features:
            return pb.GetUpgradePathResponse(plan_id="", already_included=True)
        upgrade = get_upgrade_path(self._catalog, plan.id, feature.key)
        return pb.GetUpgradePathResponse(plan_id=upgrade.id if upgrade else "")

    @unary
    async def ListPlans(self, request: pb.ListPlansRequest, context: Ctx) -> pb.ListPlansResponse:
        return self._plans

    async def WatchEntitlements(
        self, request: pb.WatchEntitlementsRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchEntitlementsResponse]:
        try:
            accounts = self._watched_accounts(request)
            channels = self._watched_channels(request)
        except EntitlementsError as exc:
            await abort(context, error_status(exc))
        hub = self._service.hub
        if hub.subscriber_count >= self._max_watchers:
            await abort_with(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"more than {self._max_watchers} watch streams are open; retry with backoff",
                reason="ERROR_REASON_OVERLOADED",
            )
        # Subscribe before reading the initial state, so no change can fall between the two.
        subscription = hub.subscribe(accounts, channels)
        opened = perf_counter()
        code = "CANCELLED"  # a stream ends when the caller goes away, unless told otherwise
        try:
            if request.send_initial and accounts is not None:
                for account_id in accounts:
                    try:
                        ent = await self._service.get(account_id)
                    except EntitlementsError as exc:
                        await abort(context, error_status(exc))
                    yield pb.WatchEntitlementsResponse(
                        entitlements=convert.entitlements(self._catalog, ent)
                    )
            while True:
                try:
                    event = await subscription.next()
                except SubscriberOverflow:
                    code = "ABORTED"
                    await abort_with(
                        context,
                        grpc.StatusCode.ABORTED,
                        "the watcher fell behind and missed changes; "
                        "watch again with send_initial to resynchronise",
                        reason="ERROR_REASON_FAILED_PRECONDITION",
                    )
                except WatchClosed:
                    code = "UNAVAILABLE"
                    await abort_with(
                        context,
                        grpc.StatusCode.UNAVAILABLE,
                        "the server is shutting down; watch again on another replica",
                        reason="ERROR_REASON_DEPENDENCY_UNAVAILABLE",
                    )
                yield _watch_message(self._catalog, event)
        finally:
            hub.unsubscribe(subscription)
            _WATCH_METRICS.observe(code, perf_counter() - opened)

    def _watched_channels(self, request: pb.WatchEntitlementsRequest) -> list[str]:
        ids = list(request.channel_ids)
        require_count(ids, "channel_ids", maximum=MAX_WATCHED_ACCOUNTS)
        for i, channel_id in enumerate(ids):
            require_id(channel_id, f"channel_ids[{i}]")
        return list(dict.fromkeys(ids))

    def _watched_accounts(self, request: pb.WatchEntitlementsRequest) -> list[str] | None:
        ids = list(request.account_ids)
        if request.all_accounts:
            if ids:
                raise InvalidArgument("account_ids", "must be empty when all_accounts is set")
            return None
        if not ids and not request.channel_ids:
            raise InvalidArgument(
                "account_ids", "name at least one account or channel, or set all_accounts"
            )
        require_count(ids, "account_ids", maximum=MAX_WATCHED_ACCOUNTS)
        for i, account_id in enumerate(ids):
            require_id(account_id, f"account_ids[{i}]")
        return list(dict.fromkeys(ids))


def _watch_message(catalog: Catalog, event: WatchEvent) -> pb.WatchEntitlementsResponse:
    if isinstance(event, AccountEntitlements):
        return pb.WatchEntitlementsResponse(entitlements=convert.entitlements(catalog, event))
    now = convert.timestamp(datetime.now(UTC))
    if isinstance(event, TokenAccessChanged):
        return pb.WatchEntitlementsResponse(
            token_access_changed=pb.TokenAccessChanged(
                channel_id=event.channel_id,
                user_id=event.user_id,
                wallet_addresses=event.wallet_addresses,
                granted=event.granted,
                unmet_requirement_ids=event.unmet_requirement_ids,
                occurred_at=now,
            )
        )
    return pb.WatchEntitlementsResponse(
        threshold_crossed=pb.UsageThresholdCrossed(
            account_id=event.account_id,
            metric=event.metric,
            limit_key=event.limit_key,
            period=event.period,
            level=plan_pb2.UsageLevel.ValueType(event.level),
            current=event.current,
            limit=event.limit,
            occurred_at=now,
        )
    )


def _valid_id(value: str) -> bool:
    return (
        bool(value)
        and len(value) <= MAX_ID_LENGTH
        and value.isprintable()
        and (value.strip() == value)
    )
