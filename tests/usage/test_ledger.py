"""The ledger's counters in memory: answered at once, refreshed in the background."""

from __future__ import annotations

import asyncio

from entitlements.store.repository import Store
from entitlements.store.usage_repository import UsageRepository
from entitlements.usage.ledger import Increment, UsageLedger
from entitlements.watch import WatchHub


def increment(key: str, delta: int) -> Increment:
    return Increment("ws", "messages", delta, key, "2026-11", 0, False, "maxMessages", 10_000)


async def test_a_stale_counter_is_answered_at_once_and_refreshed_in_the_background(
    store: Store,
) -> None:
    ours = UsageLedger(UsageRepository(store.engine), WatchHub(), counter_ttl_seconds=0)
    other = UsageLedger(UsageRepository(store.engine), WatchHub())  # another replica
    ours.start()
    other.start()
    try:
        key = ("ws", "messages", "2026-11")
        assert await ours.current(key) == 0  # the first read waits for the database
        await other.report([increment("a", 7)])
        assert await ours.current(key) == 0  # stale, answered at once; a refresh starts
        for _ in range(100):
            await asyncio.sleep(0.01)
            if await ours.current(key) == 7:
                break
        assert await ours.current(key) == 7
        await ours.report([increment("b", 1)])
        assert await ours.current(key) == 8  # our own write is known at once
    finally:
        await ours.close()
        await other.close()


class CountingRepository(UsageRepository):
    """The real repository, counting its counter reads."""

    reads = 0

    async def counter(self, key: tuple[str, str, str]) -> int:
        self.reads += 1
        return await super().counter(key)


async def test_concurrent_first_reads_of_a_counter_share_one_query(store: Store) -> None:
    repository = CountingRepository(store.engine)
    ledger = UsageLedger(repository, WatchHub())
    ledger.start()
    try:
        key = ("ws", "messages", "2026-11")
        values = await asyncio.gather(*(ledger.current(key) for _ in range(50)))
        assert values == [0] * 50
        assert repository.reads == 1
        assert await ledger.current(key) == 0
        assert repository.reads == 1  # fresh: from memory
    finally:
        await ledger.close()


async def test_keys_past_the_retention_window_are_pruned_and_younger_ones_kept(
    store: Store,
) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    clock = [now]
    ledger = UsageLedger(
        UsageRepository(store.engine),
        WatchHub(),
        key_retention_seconds=3600,
        clock=lambda: clock[0],
    )
    ledger.start()
    try:
        await ledger.report([increment("old", 1)])
        assert await ledger.prune() == 0  # younger than an hour: kept
        assert (await ledger.report([increment("old", 1)]))[0].status == "duplicate"

        clock[0] = now + timedelta(hours=2)
        assert await ledger.prune() == 1
        # Forgotten: the same key counts again (why ReportUsage refuses events older than the
        # window); the counter keeps what was counted.
        again = await ledger.report([increment("old", 1)])
        assert (again[0].status, again[0].total) == ("applied", 2)
    finally:
        await ledger.close()
