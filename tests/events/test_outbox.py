"""The outbox: an event exists exactly when its change committed; producers write each event
once; claims never hand the same attempt to two dispatchers."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from entitlements.events.renewals import RenewalScan
from entitlements.events.types import new_event
from entitlements.store.engine import create_engine
from entitlements.store.events_repository import EventsRepository, Outcome, append_event
from entitlements.store.models import OutboxEvent
from entitlements.store.records import SubscriptionRecord
from entitlements.store.repository import Store
from entitlements.store.usage_repository import UsageRepository
from entitlements.usage.ledger import Increment, UsageLedger
from entitlements.watch import WatchHub

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def messages(key: str, delta: int, account: str = "ws") -> Increment:
    return Increment(account, "messages", delta, key, "2026-11", 0, False, "maxMessages", 1000)


async def events(store: Store, type_: str | None = None) -> list[OutboxEvent]:
    async with store._transaction() as session:
        query = select(OutboxEvent).order_by(OutboxEvent.seq)
        if type_ is not None:
            query = query.where(OutboxEvent.type == type_)
        return list((await session.execute(query)).scalars())


async def test_an_event_of_a_rolled_back_change_does_not_exist(store: Store) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with store._transaction(write=True) as session:
            await append_event(session, new_event("payment.failed", "ws", {}, now=NOW))
            raise Boom
    async with store._transaction(write=True) as session:
        await append_event(session, new_event("payment.failed", "ws2", {}, now=NOW))

    assert [e.account_id for e in await events(store)] == ["ws2"]


async def test_each_threshold_crossing_is_written_once_with_its_figures(store: Store) -> None:
    ledger = UsageLedger(UsageRepository(store.engine), WatchHub())
    ledger.start()
    try:
        await ledger.report([messages("a", 760)])  # 76 %: the 75 level
        await ledger.report([messages("b", 10)])  # still 75
        await ledger.report([messages("a", 760)])  # a retry: counted once, no event
        await ledger.report([messages("c", 300)])  # 107 %: the 90 and 100 levels
    finally:
        await ledger.close()

    crossed = await events(store, "usage.threshold_crossed")
    bodies = [json.loads(e.body) for e in crossed]
    assert [b["data"]["level"] for b in bodies] == [75, 90, 100]
    assert bodies[0]["data"] == {
        "metric": "messages",
        "period": "2026-11",
        "level": 75,
        "total": 760,
        "limit": 1000,
    }
    assert {b["account_id"] for b in bodies} == {"ws"}
    assert len({b["id"] for b in bodies}) == 3


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_each_threshold_crossing_once_across_two_replicas(
    store: Store, database_url: str
) -> None:
    engine = create_engine(database_url)  # the other replica's own pool
    ledgers = [
        UsageLedger(UsageRepository(store.engine), WatchHub()),
        UsageLedger(UsageRepository(engine), WatchHub()),
    ]
    for ledger in ledgers:
        ledger.start()
    try:
        await asyncio.gather(
            *(
                ledgers[i % 2].report([messages(f"k{i}", 50, account=f"ws{i % 3}")])
                for i in range(60)
            )
        )
    finally:
        for ledger in ledgers:
            await ledger.close()
        await engine.dispose()

    crossed = await events(store, "usage.threshold_crossed")
    keys = [e.dedup_key for e in crossed]
    assert len(keys) == len(set(keys))
    # 60 x 50 over 3 accounts = 1000 each: every account crossed 75, 90 and 100 exactly once.
    assert len(keys) == 9


async def test_renewal_upcoming_is_written_once_per_subscription_and_period(
    store: Store,
) -> None:
    def subscription(sub_id: str, end: datetime, **kw: object) -> SubscriptionRecord:
        return SubscriptionRecord(
            id=sub_id,
            account_id=f"acct-{sub_id}",
            plan_id="pro",
            status="active",
            interval="month",
            payment_method="manual",
            current_period_start=end - timedelta(days=30),
            current_period_end=end,
            **kw,  # type: ignore[arg-type]
        )

    for record in (
        subscription("soon", NOW + timedelta(days=3)),
        subscription("later", NOW + timedelta(days=20)),
        subscription("canceling", NOW + timedelta(days=2), cancel_at_period_end=True),
    ):
        await store.save_subscription(record)
    repository = EventsRepository(store.engine)
    scan = RenewalScan(repository, notice_days=7, interval_seconds=3600)
    other_replica = RenewalScan(repository, notice_days=7, interval_seconds=3600)

    assert await scan.scan(NOW) == 1
    assert await other_replica.scan(NOW + timedelta(hours=1)) == 0
    # The next period is a new event.
    await store.save_subscription(subscription("soon", NOW + timedelta(days=33)))
    assert await scan.scan(NOW + timedelta(days=15)) == 1  # "later"
    assert await scan.scan(NOW + timedelta(days=27)) == 1  # "soon" again, its next period

    renewals = await events(store, "subscription.renewal_upcoming")
    assert [e.account_id for e in renewals] == ["acct-soon", "acct-later", "acct-soon"]


async def test_two_dispatchers_never_claim_the_same_attempt(store: Store) -> None:
    repository = EventsRepository(store.engine)
    for i in range(40):
        await repository.append(new_event("payment.failed", f"ws{i}", {}, now=NOW))
    await repository.fan_out([("hook", frozenset())], 500)

    claims = await asyncio.gather(
        *(repository.claim("hook", limit=7, lease_ms=60_000, ordered=False) for _ in range(8))
    )

    ids = [d.id for claim in claims for d in claim]
    assert len(ids) == len(set(ids)) == 40
    async with store._transaction() as session:
        assert await session.scalar(select(func.count()).select_from(OutboxEvent)) == 40


async def test_old_events_are_pruned_once_no_delivery_is_pending(store: Store) -> None:
    repository = EventsRepository(store.engine)
    old = datetime.now(UTC) - timedelta(days=40)
    done, waiting = (new_event("payment.failed", a, {}, now=old) for a in ("done", "waiting"))
    recent = new_event("payment.failed", "recent", {}, now=datetime.now(UTC))
    for event in (done, waiting, recent):
        await repository.append(event)
    await repository.fan_out([("hook", frozenset())], 500)
    claimed = await repository.claim("hook", limit=10, lease_ms=0, ordered=False)
    by_account = {json.loads(c.body)["account_id"]: c.id for c in claimed}
    await repository.record(
        [Outcome(by_account["done"], "delivered"), Outcome(by_account["recent"], "delivered")]
    )

    cutoff = int((datetime.now(UTC) - timedelta(days=30)).timestamp() * 1000)
    assert await repository.prune(cutoff) == 1

    assert [e.account_id for e in await events(store)] == ["waiting", "recent"]
    rows = await repository.list_deliveries()
    assert [r.account_id for r in rows] == ["waiting", "recent"]
