"""The admin domain service: revenue metrics from stored facts, the subscription listing and
audited per-account overrides (through `EntitlementService.set_overrides`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from entitlements.admin.metrics import RevenueMetrics, compute_metrics
from entitlements.admin.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    PageFilter,
    decode_token,
    encode_token,
)
from entitlements.errors import InvalidArgument
from entitlements.policies import Catalog, Overrides
from entitlements.service import EntitlementService
from entitlements.store.admin_repository import AdminStore
from entitlements.store.records import SUBSCRIPTION_STATUSES, SubscriptionRecord

if TYPE_CHECKING:
    from entitlements.crypto.funds import UnsettledFunds

__all__ = ["AdminService", "LimitRequest", "OverridesRequest", "StoredOverrides"]

DEFAULT_CHURN_WINDOW_DAYS = 30
MAX_CHURN_WINDOW_DAYS = 3660
MAX_REASON_LENGTH = 2000
EARLIEST_AS_OF = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_AS_OF = datetime(9999, 1, 1, tzinfo=UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class LimitRequest:
    key: str
    unlimited: bool = False
    value: int = 0


@dataclass(frozen=True, slots=True)
class OverridesRequest:
    """SetAccountOverrides' input, as the caller sent it (validated by `AdminService`)."""

    account_id: str
    limits: Sequence[LimitRequest] = ()
    granted_features: Sequence[str] = ()
    revoked_features: Sequence[str] = ()
    expires_at: datetime | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class StoredOverrides:
    account_id: str
    limits: dict[str, int | None] = field(default_factory=dict)
    granted_features: tuple[str, ...] = ()
    revoked_features: tuple[str, ...] = ()
    expires_at: datetime | None = None
    reason: str = ""
    revision: int = 0


class AdminService:
    """What AdminService's RPCs do, on an `AdminStore` and the entitlement service."""

    def __init__(
        self,
        store: AdminStore,
        entitlements: EntitlementService,
        catalog: Catalog,
        *,
        past_due_grace: timedelta = timedelta(days=7),
        clock: Callable[[], datetime] = _utcnow,
        funds: UnsettledFunds | None = None,
    ) -> None:
        #: Crypto money received without access (None when crypto payments are not set up).
        self.funds = funds
        self._store = store
        self._entitlements = entitlements
        self._catalog = catalog
        self._grace = past_due_grace
        self._clock = clock

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    async def revenue_metrics(
        self, *, as_of: datetime | None = None, churn_window_days: int = 0
    ) -> RevenueMetrics:
        """The dashboard's figures as of `as_of` (default now); `churn_window_days` 0 means 30."""
        if churn_window_days < 0 or churn_window_days > MAX_CHURN_WINDOW_DAYS:
            raise InvalidArgument(
                "churn_window_days", f"must be between 0 and {MAX_CHURN_WINDOW_DAYS}"
            )
        window = churn_window_days or DEFAULT_CHURN_WINDOW_DAYS
        at = (as_of or self._clock()).astimezone(UTC)
        if not EARLIEST_AS_OF <= at < LATEST_AS_OF:
            # The window and the 12 months of history must stay within datetime's range.
            raise InvalidArgument(
                "as_of", f"must be from {EARLIEST_AS_OF:%Y-%m-%d} and before {LATEST_AS_OF:%Y}"
            )
        subscriptions = await self._store.subscriptions()
        revenue = await self._store.revenue_facts(at)
        failed = await self._store.failed_payments(at - timedelta(days=window), at)
        # Pure but O(subscriptions x months): off the event loop, so checks keep flowing.
        return await asyncio.to_thread(
            compute_metrics,
            self._catalog,
            subscriptions,
            revenue,
            failed,
            as_of=at,
            churn_window_days=window,
            past_due_grace=self._grace,
        )

    async def list_subscriptions(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        status: str | None = None,
        plan_id: str | None = None,
    ) -> tuple[list[SubscriptionRecord], str]:
        """A page of subscriptions newest first, and the next page's token ("" on the last)."""
        if page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        if status is not None and status not in SUBSCRIPTION_STATUSES:
            raise InvalidArgument("status", f"unknown subscription status {status!r}")
        if plan_id:
            self._catalog.plan(plan_id, field="plan_id")
        filters = PageFilter(status=status, plan_id=plan_id or None)
        after = decode_token(page_token, filters) if page_token else None
        page = await self._store.subscription_page(
            limit=size, after=after, status=filters.status, plan_id=filters.plan_id
        )
        token = encode_token(page.last, filters) if page.last is not None else ""
        return page.subscriptions, token

    def validate_overrides(self, request: OverridesRequest) -> Overrides:
        """The domain's overrides for a request; InvalidArgument names the first bad field."""
        limits: dict[str, int | None] = {}
        for i, limit in enumerate(request.limits):
            name = f"overrides.limits[{i}]"
            if not limit.key:
                raise InvalidArgument(f"{name}.key", "is required")
            self._catalog.limit(limit.key, field=f"{name}.key")
            if limit.key in limits:
                raise InvalidArgument(f"{name}.key", f"{limit.key!r} is given more than once")
            if limit.unlimited:
                limits[limit.key] = None
                continue
            if limit.value < 0:
                raise InvalidArgument(f"{name}.value", f"must not be negative, got {limit.value}")
            limits[limit.key] = limit.value
        granted = self._features(request.granted_features, "overrides.granted_features")
        revoked = self._features(request.revoked_features, "overrides.revoked_features")
        for i, key in enumerate(request.revoked_features):
            if key in granted:
                raise InvalidArgument(
                    f"overrides.revoked_features[{i}]", f"{key!r} is also granted"
                )
        if request.expires_at is not None and request.expires_at <= self._clock():
            raise InvalidArgument("overrides.expires_at", "is in the past")
        if len(request.reason) > MAX_REASON_LENGTH:
            raise InvalidArgument(
                "overrides.reason", f"must be at most {MAX_REASON_LENGTH} characters"
            )
        return Overrides(
            limits=limits, granted_features=frozenset(granted), revoked_features=frozenset(revoked)
        )

    def _features(self, keys: Sequence[str], name: str) -> set[str]:
        for i, key in enumerate(keys):
            if not key:
                raise InvalidArgument(f"{name}[{i}]", "is required")
            self._catalog.feature(key, field=f"{name}[{i}]")
        return set(keys)

    async def set_overrides(self, request: OverridesRequest, *, actor: str) -> StoredOverrides:
        """Replace the account's overrides (audited with `actor`, old and new) and answer what is
        stored now, with the account's revision."""
        overrides = self.validate_overrides(request)
        ent = await self._entitlements.set_overrides(
            request.account_id,
            overrides,
            expires_at=request.expires_at,
            actor=actor,
            reason=request.reason,
        )
        snapshot = await self._entitlements.store.get_account_snapshot(
            request.account_id, now=self._clock()
        )
        records = snapshot.overrides if snapshot is not None else ()
        expiries = [r.expires_at for r in records if r.expires_at is not None]
        return StoredOverrides(
            account_id=request.account_id,
            limits={r.key: r.value for r in records if r.kind == "limit"},
            granted_features=tuple(sorted(r.key for r in records if r.kind == "feature_grant")),
            revoked_features=tuple(sorted(r.key for r in records if r.kind == "feature_revoke")),
            expires_at=min(expiries) if expiries else None,
            reason=request.reason,
            revision=max(ent.revision, snapshot.revision if snapshot is not None else 0),
        )
