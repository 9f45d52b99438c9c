"""The usage repository's group write, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from entitlements.store.repository import Store
from entitlements.store.usage_repository import CounterKey, GroupWrite, KeyRecord, UsageRepository

COUNTER: CounterKey = ("ws", "messages", "2026-11")


def record(key: str, total: int, metric: str = "messages") -> KeyRecord:
    return KeyRecord("ws", key, metric, 1, "2026-11", total, 0)


# PostgreSQL only: on SQLite the group holds the database's write lock from its read of the
# stored keys to its commit, so no other writer can take a key meanwhile.
@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_a_key_taken_meanwhile_is_retried_and_then_seen_as_stored(store: Store) -> None:
    """Another replica can insert a key between this group's read of the stored keys and its
    write (for another counter, so the counter locks do not order them). The write then fails
    on the unique index and the whole group is tried again, seeing the key this time."""
    repository = UsageRepository(store.engine)
    try:
        await repository.apply_group(
            [COUNTER], [("ws", "taken")], lambda values, stored: _write([record("taken", 1)], 1)
        )
        calls: list[dict[tuple[str, str], KeyRecord]] = []

        def decide(
            values: dict[CounterKey, int], stored: dict[tuple[str, str], KeyRecord]
        ) -> GroupWrite:
            calls.append(stored)
            if len(calls) == 1:  # as if the key had been taken after the read
                return _write([record("fresh", 2), record("taken", 3, "aiQueries")], 3)
            assert ("ws", "taken") in stored
            return _write([record("fresh", 2)], 2)

        write, _ = await repository.apply_group(
            [COUNTER], [("ws", "fresh"), ("ws", "taken")], decide
        )
        assert len(calls) == 2
        assert [r.idempotency_key for r in write.new_keys] == ["fresh"]
        assert await repository.counter(COUNTER) == 2
        assert await repository.counter(("ws", "aiQueries", "2026-11")) == 0
    finally:
        await repository.close()


def _write(keys: list[KeyRecord], total: int) -> GroupWrite:
    return GroupWrite(new_keys=keys, counters={COUNTER: total})


async def _insert_received(store: Store, received: list[int]) -> None:
    async with store.engine.begin() as conn:
        for i, at in enumerate(received):
            await conn.execute(
                text(
                    "INSERT INTO usage_events (account_id, idempotency_key, metric, delta, period,"
                    " total, occurred_at_ms, received_at_ms)"
                    " VALUES ('ws', :key, 'messages', 1, '2026-11', 1, 0, :at)"
                ),
                {"key": f"k{i:03}", "at": at},
            )


async def _kept(store: Store) -> list[int]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT received_at_ms FROM usage_events ORDER BY idempotency_key")
        )
        return [at for (at,) in rows]


async def test_pruning_removes_exactly_the_keys_received_before_the_cutoff(store: Store) -> None:
    """Over many batches, and with a row out of receipt order (the clock set back after it):
    every row received before the cutoff goes, every later one stays, none early."""
    received = [*range(100, 110), 9_999, *range(110, 123), 5_000, 5_001, 900, 6_000]
    await _insert_received(store, received)
    repository = UsageRepository(store.engine)
    try:
        removed = await repository.prune_keys(1_000, batch=4)
        assert removed == len([at for at in received if at < 1_000])
        assert await _kept(store) == [9_999, 5_000, 5_001, 6_000]
        assert await repository.prune_keys(1_000, batch=4) == 0
        assert await repository.prune_keys(6_000, batch=4) == 2
        assert await _kept(store) == [9_999, 6_000]
    finally:
        await repository.close()


async def test_pruning_an_empty_or_young_key_table_removes_nothing(store: Store) -> None:
    repository = UsageRepository(store.engine)
    try:
        assert await repository.prune_keys(1_000, batch=4) == 0
        await _insert_received(store, [2_000, 2_001])
        assert await repository.prune_keys(1_000, batch=1) == 0
        assert await _kept(store) == [2_000, 2_001]
    finally:
        await repository.close()
