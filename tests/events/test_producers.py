"""The producers in the stores: a manual (or crypto) subscription saved through
`Store.save_subscription` and a token-gated access turned by `TokenGateStore.record_access`
write their events with the change, and a real receiver gets each with its documented payload;
a change that rolled back, or the same change written again, writes nothing."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from entitlements.errors import AlreadyExists
from entitlements.store.records import SubscriptionRecord
from entitlements.store.repository import Store
from entitlements.store.tokengate_repository import TokenGateStore
from tests.events.outbox import check_documented, deliver, outbox
from tests.events.receiver import Receiver

END = datetime(2026, 12, 28, 12, 0, tzinfo=UTC)
WALLET = "0x" + "ab" * 20

MANUAL = SubscriptionRecord(
    id="manual_1",
    account_id="ws-sales",
    plan_id="business",
    status="active",
    interval="year",
    payment_method="manual",
    current_period_start=END - timedelta(days=365),
    current_period_end=END,
)


async def test_a_manual_subscriptions_lifecycle_reaches_the_receiver(
    store: Store, receiver: Receiver
) -> None:
    await store.save_subscription(MANUAL)
    await store.save_subscription(MANUAL)  # saved again unchanged: nothing new
    await store.save_subscription(replace(MANUAL, plan_id="enterprise"))
    await store.save_subscription(replace(MANUAL, plan_id="enterprise", status="past_due"))
    await store.save_subscription(replace(MANUAL, plan_id="enterprise", cancel_at_period_end=True))
    ended = datetime(2026, 12, 1, tzinfo=UTC)
    await store.save_subscription(
        replace(MANUAL, plan_id="enterprise", status="canceled", ended_at=ended)
    )

    got = await deliver(store.engine, receiver)

    assert [e["type"] for e in got] == [
        "subscription.activated",
        "subscription.changed",
        "subscription.past_due",
        "subscription.canceled",
        "subscription.canceled",
    ]
    for event in got:
        check_documented(event)
        assert event["account_id"] == "ws-sales"
    activated, changed, past_due, scheduled, canceled = (e["data"] for e in got)
    assert activated == {
        "subscription_id": "manual_1",
        "plan_id": "business",
        "interval": "year",
        "payment_method": "manual",
        "status": "active",
        "current_period_end": "2026-12-28T12:00:00.000+00:00",
    }
    assert changed == {
        "subscription_id": "manual_1",
        "plan_id": "enterprise",
        "previous_plan_id": "business",
        "interval": "year",
        "previous_interval": "year",
        "payment_method": "manual",
    }
    since = datetime.fromisoformat(past_due["past_due_since"])
    assert datetime.fromisoformat(past_due["grace_ends_at"]) == since + store.past_due_grace
    assert (scheduled["cancel_at_period_end"], scheduled["ended_at"]) == (True, None)
    assert canceled["ended_at"] == "2026-12-01T00:00:00.000+00:00"
    assert canceled["status"] == "canceled"


async def test_a_subscription_save_that_rolled_back_writes_no_event(store: Store) -> None:
    await store.save_subscription(MANUAL)
    with pytest.raises(AlreadyExists):  # the id is another account's: the save rolls back
        await store.save_subscription(replace(MANUAL, account_id="ws-other"))

    assert [(e["type"], e["account_id"]) for e in await outbox(store.engine)] == [
        ("subscription.activated", "ws-sales")
    ]


async def test_a_token_access_that_turns_reaches_the_receiver_once_per_turn(
    store: Store, receiver: Receiver
) -> None:
    gate = TokenGateStore(store.engine)
    await gate.record_access("chan-1", "user-1", [WALLET], True)  # the first decision: no turn
    await gate.record_access("chan-1", "user-1", [WALLET], False)
    await gate.record_access("chan-1", "user-1", [WALLET], False)  # again: no turn
    await gate.record_access("chan-1", "user-1", [WALLET], True)
    await gate.record_access("chan-2", "user-1", [WALLET], False)

    got = await deliver(store.engine, receiver)

    assert [e["type"] for e in got] == ["token_access.revoked", "token_access.granted"]
    for event in got:
        check_documented(event)
        assert event["account_id"] == "chan-1"
        assert event["data"] == {
            "channel_id": "chan-1",
            "user_id": "user-1",
            "wallet_addresses": [WALLET],
        }


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_replicas_write_one_event_per_transition(store: Store, database_url: str) -> None:
    other = Store.open(database_url)  # the other replica's own pool
    gates = [TokenGateStore(store.engine), TokenGateStore(other.engine)]
    try:
        for i in range(10):
            await gates[0].record_access(f"chan-{i}", "user-1", [WALLET], True)
        # Both replicas activate the same subscriptions and revoke the same accesses at once.
        await asyncio.gather(
            *(
                s.save_subscription(replace(MANUAL, id=f"manual_{i}", account_id=f"ws-{i}"))
                for i in range(10)
                for s in (store, other)
            ),
            *(
                g.record_access(f"chan-{i}", "user-1", [WALLET], False)
                for i in range(10)
                for g in gates
            ),
        )
    finally:
        await other.close()

    written = await outbox(store.engine)
    activated = sorted(e["account_id"] for e in written if e["type"] == "subscription.activated")
    revoked = sorted(e["account_id"] for e in written if e["type"] == "token_access.revoked")
    assert activated == sorted(f"ws-{i}" for i in range(10))
    assert revoked == sorted(f"chan-{i}" for i in range(10))
    assert len(written) == 20
