"""The usage repository's group write, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

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
