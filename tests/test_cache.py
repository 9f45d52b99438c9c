"""The entitlement cache: single-flight loads, invalidation races, stale-if-down, time limits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from entitlements.cache import EntitlementCache
from entitlements.errors import Unavailable
from entitlements.policies import default_catalog, resolve
from entitlements.state import AccountEntitlements

NOW = datetime(2026, 11, 24, tzinfo=UTC)


def entitlements(
    account_id: str, revision: int, plan: str = "free", valid_until: datetime | None = None
) -> AccountEntitlements:
    return AccountEntitlements(
        account_id=account_id,
        revision=revision,
        effective=resolve(default_catalog(), plan),
        subscription=None,
        status="none",
        grace_period_end=None,
        valid_until=valid_until,
    )


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_concurrent_reads_of_a_missing_account_share_one_load() -> None:
    loads = 0
    gate = asyncio.Event()

    async def loader(account_id: str) -> AccountEntitlements:
        nonlocal loads
        loads += 1
        await gate.wait()
        return entitlements(account_id, 3)

    cache = EntitlementCache(loader, maxsize=10, ttl_seconds=60)
    readers = [asyncio.create_task(cache.get("a")) for _ in range(100)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*readers)
    assert loads == 1
    assert {r.revision for r in results} == {3}
    assert cache.peek("a") is not None


async def test_a_load_that_began_before_an_invalidation_is_not_cached() -> None:
    revision = 1
    gate = asyncio.Event()
    started = asyncio.Event()

    async def loader(account_id: str) -> AccountEntitlements:
        seen = revision
        started.set()
        await gate.wait()
        return entitlements(account_id, seen)

    cache = EntitlementCache(loader, maxsize=10, ttl_seconds=60)
    old_read = asyncio.create_task(cache.get("a"))
    await started.wait()
    revision = 2  # a write lands while the first load is in flight
    cache.invalidate("a")
    new_read = asyncio.create_task(cache.get("a"))
    await asyncio.sleep(0)
    gate.set()
    assert (await old_read).revision == 1
    assert (await new_read).revision == 2
    cached = cache.peek("a")
    assert cached is not None and cached.revision == 2


async def test_stale_entry_is_served_when_the_database_is_down() -> None:
    clock = Clock()
    down = False

    async def loader(account_id: str) -> AccountEntitlements:
        if down:
            raise Unavailable("database is down")
        return entitlements(account_id, 7, "pro")

    cache = EntitlementCache(loader, maxsize=10, ttl_seconds=5, monotonic=clock)
    await cache.get("a")
    clock.t += 10
    down = True
    assert cache.peek("a") is None
    served = await cache.get("a")
    assert (served.revision, served.plan_id) == (7, "pro")
    assert cache.stale_served == 1
    with pytest.raises(Unavailable):
        await cache.get("never-loaded")


async def test_entry_expires_after_the_ttl() -> None:
    clock = Clock()
    loads = 0

    async def loader(account_id: str) -> AccountEntitlements:
        nonlocal loads
        loads += 1
        return entitlements(account_id, loads)

    cache = EntitlementCache(loader, maxsize=10, ttl_seconds=5, monotonic=clock)
    await cache.get("a")
    clock.t += 4.9
    assert cache.peek("a") is not None
    clock.t += 0.2
    assert cache.peek("a") is None
    assert (await cache.get("a")).revision == 2


async def test_entry_expires_when_its_answer_changes_by_time() -> None:
    clock = Clock()

    async def loader(account_id: str) -> AccountEntitlements:
        return entitlements(account_id, 1, "pro", valid_until=NOW + timedelta(seconds=2))

    cache = EntitlementCache(
        loader, maxsize=10, ttl_seconds=600, monotonic=clock, wallclock=lambda: NOW
    )
    await cache.get("a")
    clock.t += 1.9
    assert cache.peek("a") is not None
    clock.t += 0.2
    assert cache.peek("a") is None


async def test_cache_is_bounded_least_recently_used_first() -> None:
    async def loader(account_id: str) -> AccountEntitlements:
        return entitlements(account_id, 1)

    cache = EntitlementCache(loader, maxsize=3, ttl_seconds=60)
    for account in "abc":
        await cache.get(account)
    cache.peek("a")  # a is now the most recently used
    await cache.get("d")
    assert len(cache) == 3
    assert cache.peek("b") is None
    assert cache.peek("a") is not None


async def test_put_never_replaces_a_newer_revision() -> None:
    async def loader(account_id: str) -> AccountEntitlements:
        return entitlements(account_id, 5)

    cache = EntitlementCache(loader, maxsize=3, ttl_seconds=60)
    await cache.get("a")
    cache.put(entitlements("a", 4))
    cached = cache.peek("a")
    assert cached is not None and cached.revision == 5


async def test_a_failed_load_reaches_every_waiter_and_is_retried_next_time() -> None:
    fail = True

    async def loader(account_id: str) -> AccountEntitlements:
        await asyncio.sleep(0)
        if fail:
            raise Unavailable("down")
        return entitlements(account_id, 1)

    cache = EntitlementCache(loader, maxsize=3, ttl_seconds=60)
    results = await asyncio.gather(*(cache.get("a") for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results)
    fail = False
    assert (await cache.get("a")).revision == 1
