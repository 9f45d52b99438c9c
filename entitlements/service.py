"""The entitlement domain service: cached reads, writes that bump the revision and notify."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from cachetools import LRUCache

from entitlements.cache import EntitlementCache
from entitlements.errors import InvalidArgument, StaleRevision
from entitlements.policies import Catalog, Overrides, validate_overrides
from entitlements.state import KNOWN_STATUSES, AccountEntitlements, derive
from entitlements.store.records import OverrideKind, OverrideRecord, SubscriptionRecord
from entitlements.store.repository import Store
from entitlements.watch import WatchHub


def utcnow() -> datetime:
    return datetime.now(UTC)


class EntitlementService:
    """Answers what accounts may do from the cache, and applies changes to them.

    Every write goes to the store first (which bumps the account's revision in the same
    transaction), then the cache entry is dropped and the new state is pushed to watchers.
    """

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        hub: WatchHub,
        *,
        past_due_grace: timedelta = timedelta(days=7),
        cache_size: int = 200_000,
        cache_ttl_seconds: float = 60.0,
        min_revision_wait_seconds: float = 0.2,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.hub = hub
        self._past_due_grace = past_due_grace
        self._clock = clock
        self._min_revision_wait = min_revision_wait_seconds
        #: Checks with a min_revision newer than the cache: read through to the database, and
        #: of those, refused as STALE_REVISION (counted for /metrics).
        self.read_throughs = 0
        self.stale_revisions = 0
        self._published: LRUCache[str, int] = LRUCache(100_000)
        self.cache = EntitlementCache(
            self._load, maxsize=cache_size, ttl_seconds=cache_ttl_seconds, wallclock=clock
        )

    def now(self) -> datetime:
        return self._clock()

    async def _load(self, account_id: str) -> AccountEntitlements:
        read_at = self._clock()
        snapshot = await self.store.get_account_snapshot(account_id)
        return derive(
            self.catalog,
            account_id,
            snapshot,
            now=self._clock(),
            past_due_grace=self._past_due_grace,
            as_of=read_at,
        )

    async def get(self, account_id: str, min_revision: int = 0) -> AccountEntitlements:
        """The account's entitlements from the cache; with `min_revision`, at least that revision
        (read through to the database when the cache is older; StaleRevision if the database
        has not reached it within the wait)."""
        cached = self.cache.peek(account_id)
        if cached is not None and cached.revision >= min_revision:
            return cached
        if min_revision > 0:
            known = self.cache.known_revision(account_id)
            if known is None or known < min_revision:
                return await self._read_through(account_id, min_revision)
        ent = await self.cache.get(account_id)
        if ent.revision < min_revision:  # a stale entry served while the database is down
            return await self._read_through(account_id, min_revision)
        return ent

    async def _read_through(self, account_id: str, min_revision: int) -> AccountEntitlements:
        """Read the account from the database until it reaches `min_revision` (a write on
        another replica whose change feed has not reached this one yet), for a bounded time.

        No stale answer can satisfy the caller, so a database that is down raises Unavailable.
        """
        self.read_throughs += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._min_revision_wait
        pause = 0.01
        while True:
            ent = await self._load(account_id)
            if ent.revision >= min_revision:
                self.cache.put(ent)
                self._publish(ent)
                return ent
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.stale_revisions += 1
                raise StaleRevision(account_id, min_revision, ent.revision)
            await asyncio.sleep(min(pause, remaining))
            pause *= 2

    async def stored_revision(self, account_id: str) -> int:
        """The account's revision in the database (not this replica's cache, which may lag a
        write made elsewhere): a `min_revision` token covering every committed change."""
        snapshot = await self.store.get_account_snapshot(account_id)
        return 0 if snapshot is None else snapshot.revision

    async def save_subscription(self, record: SubscriptionRecord) -> AccountEntitlements:
        """Store a subscription (created or changed) and publish the account's new state."""
        self.catalog.plan(record.plan_id, field="plan_id")
        if record.status not in KNOWN_STATUSES:
            raise InvalidArgument("status", f"unknown subscription status {record.status!r}")
        await self.store.save_subscription(record)
        return await self.changed(record.account_id)

    async def set_overrides(
        self,
        account_id: str,
        overrides: Overrides,
        *,
        expires_at: datetime | None,
        actor: str,
        reason: str,
    ) -> AccountEntitlements:
        """Replace an account's overrides (audited) and publish its new state."""
        validate_overrides(self.catalog, overrides)
        # The store stamps who and when (and keeps them for an override set again unchanged).
        wanted: list[tuple[OverrideKind, str, int | None]] = [
            ("limit", key, value) for key, value in overrides.limits.items()
        ]
        wanted += [("feature_grant", key, None) for key in sorted(overrides.granted_features)]
        wanted += [("feature_revoke", key, None) for key in sorted(overrides.revoked_features)]
        records = [
            OverrideRecord(kind=kind, key=key, value=value, expires_at=expires_at)
            for kind, key, value in wanted
        ]
        await self.store.set_overrides(account_id, records, actor=actor, reason=reason)
        return await self.changed(account_id)

    async def changed(self, account_id: str) -> AccountEntitlements:
        """An account changed in the store: reload it and tell its watchers, once per revision
        (this process's write and the change feed may both report the same change)."""
        self.cache.invalidate(account_id)
        ent = await self.cache.get(account_id)
        self._publish(ent)
        return ent

    def _publish(self, ent: AccountEntitlements) -> None:
        last = self._published.get(ent.account_id)
        if last is None or ent.revision > last:
            self._published[ent.account_id] = ent.revision
            self.hub.publish(ent)

    async def warm(self, account_ids: Sequence[str]) -> int:
        """Load many accounts in one query (start-up warm-up); returns how many were cached."""
        read_at = self._clock()
        snapshots = await self.store.get_account_snapshots(account_ids)
        now = self._clock()
        for account_id in account_ids:
            self.cache.put(
                derive(
                    self.catalog,
                    account_id,
                    snapshots.get(account_id),
                    now=now,
                    past_due_grace=self._past_due_grace,
                    as_of=read_at,
                )
            )
        return len(account_ids)
