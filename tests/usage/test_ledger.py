"""The ledger's counters in memory: answered at once, refreshed in the background."""

from __future__ import annotations

import asyncio

import pytest

from entitlements.errors import InvalidArgument
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


#: Events that pass the ledger's own checks but that a database refuses: a NUL in a key
#: (PostgreSQL text cannot hold one; SQLite can) and a time past a 64-bit column.
CULPRITS = {
    "nul-in-key": Increment(
        "ws", "messages", 1, "bad\x00key", "2026-11", 0, False, "maxMessages", 10_000
    ),
    "occurred-at-past-int64": Increment(
        "ws", "messages", 1, "bad-time", "2026-11", 2**63, False, "maxMessages", 10_000
    ),
}


@pytest.mark.parametrize("culprit", list(CULPRITS))
async def test_a_batch_the_database_refuses_fails_alone_and_the_others_count_once(
    store: Store, culprit: str
) -> None:
    """The edge refuses such text; this batch bypasses it, as a failure the edge cannot foresee
    would. Its group used to fail whole: every batch committed with it got an error."""
    ledger = UsageLedger(UsageRepository(store.engine), WatchHub())
    ledger.start()
    try:
        good = [[increment(f"good-{i}-{j}", 1) for j in range(3)] for i in range(60)]
        bad = [increment("bad-neighbour", 1000), CULPRITS[culprit]]
        batches = [*good[:30], bad, *good[30:]]
        results = await asyncio.gather(
            *(ledger.report(batch) for batch in batches), return_exceptions=True
        )
        answered = dict(zip(map(id, batches), results, strict=True))
        failed = [
            r
            for b, r in zip(batches, results, strict=True)
            if b is not bad and isinstance(r, BaseException)
        ]
        assert not failed, f"{len(failed)} good batches failed: {failed[0]!r}"
        outcome = answered[id(bad)]
        stored_anyway = store.engine.dialect.name == "sqlite" and culprit == "nul-in-key"
        if stored_anyway:
            assert not isinstance(outcome, BaseException), outcome
        else:
            assert isinstance(outcome, InvalidArgument), outcome
            assert outcome.field == "events"
        expected = 3 * 60 + (1001 if stored_anyway else 0)
        assert await ledger.current(("ws", "messages", "2026-11")) == expected
        fresh = UsageLedger(UsageRepository(store.engine), WatchHub())
        assert await fresh.current(("ws", "messages", "2026-11")) == expected  # durable, once
        await fresh.close()
        # Retried, each good batch is a duplicate: it was counted exactly once.
        again = await ledger.report(good[0])
        assert [o.status for o in again] == ["duplicate"] * 3
    finally:
        await ledger.close()


async def test_a_caller_that_goes_away_does_not_fail_the_batches_committed_with_its_own(
    store: Store,
) -> None:
    ledger = UsageLedger(UsageRepository(store.engine), WatchHub())
    ledger.start()
    try:
        tasks = [
            asyncio.ensure_future(ledger.report([increment(f"stay-{i}", 1)])) for i in range(20)
        ]
        leaving = asyncio.ensure_future(ledger.report([increment("leaves", 1)]))
        tasks += [
            asyncio.ensure_future(ledger.report([increment(f"stay-{i}", 1)])) for i in range(20, 40)
        ]
        await asyncio.sleep(0)  # every report is queued
        leaving.cancel()  # its call was cancelled (a deadline) while the group commits
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
        # Its event was committed with the group: a retry of it is a duplicate.
        again = await ledger.report([increment("leaves", 1)])
        assert again[0].status == "duplicate"
        assert await ledger.current(("ws", "messages", "2026-11")) == 41
    finally:
        await ledger.close()
