"""The in-process cache of account entitlements: LRU-bounded, single-flight, stale-if-down."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from cachetools import LRUCache

from entitlements.errors import Unavailable
from entitlements.state import AccountEntitlements

Loader = Callable[[str], Awaitable[AccountEntitlements]]


class EntitlementCache:
    """Maps account ids to their entitlements.

    An entry is fresh until the TTL passes or its ``valid_until`` arrives, whichever is first; a
    stale entry is reloaded on the next read, and served anyway if the database is down.
    Concurrent reads of one missing account share one load. ``invalidate`` drops an entry and
    disowns any load in flight, so a load that began before a write can never store the old state.

    Threads: `peek` runs on gRPC's handler threads (the hot path answers there) while the event
    loop's thread loads, stores and drops entries. An entry is an immutable value (a frozen
    `AccountEntitlements` and its deadline, in one tuple) that is only ever replaced whole, so a
    reader sees the old entry or the new one, never a mix. The LRU itself is not safe to share:
    a read moves the key to the front, and a read racing an eviction can raise or corrupt the
    order, so every touch of `_entries` holds `_lock` (held for a dictionary operation, never
    across an await; about 0.1 us uncontended).
    """

    def __init__(
        self,
        loader: Loader,
        *,
        maxsize: int,
        ttl_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._loader = loader
        self._ttl = ttl_seconds
        self._monotonic = monotonic
        self._wallclock = wallclock
        # account id -> (entitlements, monotonic deadline)
        self._entries: LRUCache[str, tuple[AccountEntitlements, float]] = LRUCache(maxsize)
        self._lock = threading.Lock()
        self._inflight: dict[str, asyncio.Future[AccountEntitlements]] = {}
        self.hits = 0
        self.misses = 0
        self.stale_served = 0

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, account_id: str) -> AccountEntitlements | None:
        """The fresh entry, or None; never waits (the hot path of every check). Any thread."""
        with self._lock:
            entry = self._entries.get(account_id)
            if entry is not None and self._monotonic() < entry[1]:
                self.hits += 1
                return entry[0]
        return None

    def _entry(self, account_id: str) -> tuple[AccountEntitlements, float] | None:
        with self._lock:
            return self._entries.get(account_id)

    async def get(self, account_id: str) -> AccountEntitlements:
        fresh = self.peek(account_id)
        if fresh is not None:
            return fresh
        self.misses += 1
        future = self._inflight.get(account_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._inflight[account_id] = future
            asyncio.get_running_loop().create_task(self._load(account_id, future))
        try:
            return await asyncio.shield(future)
        except Unavailable:
            stale = self._entry(account_id)
            if stale is None:
                raise
            self.stale_served += 1
            return stale[0]

    def known_revision(self, account_id: str) -> int | None:
        """The revision of the cached entry, fresh or not; None if the account is not cached."""
        entry = self._entry(account_id)
        return None if entry is None else entry[0].revision

    def invalidate(self, account_id: str) -> None:
        with self._lock:
            self._entries.pop(account_id, None)
        self._inflight.pop(account_id, None)

    def put(self, value: AccountEntitlements) -> None:
        """Store a freshly loaded value unless a newer revision is already cached."""
        entry = (value, self._deadline(value))
        with self._lock:
            current = self._entries.get(value.account_id)
            if current is not None and current[0].revision > value.revision:
                return
            self._entries[value.account_id] = entry

    def _deadline(self, value: AccountEntitlements) -> float:
        now = self._monotonic()
        deadline = now + self._ttl
        if value.valid_until is not None:
            remaining = (value.valid_until - self._wallclock()).total_seconds()
            deadline = min(deadline, now + max(remaining, 0.0))
        return deadline

    async def _load(self, account_id: str, future: asyncio.Future[AccountEntitlements]) -> None:
        try:
            value = await self._loader(account_id)
        except BaseException as exc:  # handed to every waiter
            if self._inflight.get(account_id) is future:
                del self._inflight[account_id]
            if not future.done():
                future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
            return
        if self._inflight.get(account_id) is future:
            del self._inflight[account_id]
            self.put(value)
        if not future.done():
            future.set_result(value)
