"""The Store: subscriptions, overrides and account revisions on both backends."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from entitlements.errors import AlreadyExists, InvalidArgument
from entitlements.store.models import OverrideAudit
from entitlements.store.records import OverrideRecord, SubscriptionRecord
from entitlements.store.repository import Store

T0 = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
CET = timezone(timedelta(hours=1))


def subscription(account_id: str = "ws-1", **changes: object) -> SubscriptionRecord:
    record = SubscriptionRecord(
        id=uuid.uuid4().hex,
        account_id=account_id,
        user_id="user-1",
        plan_id="pro",
        status="active",
        interval="month",
        payment_method="card",
        stripe_customer_id="cus_123",
        stripe_subscription_id=f"sub_{uuid.uuid4().hex[:12]}",
        stripe_price_id="price_pro_monthly",
        current_period_start=T0,
        current_period_end=T0 + timedelta(days=31),
        trial_end=(T0 - timedelta(days=14)).astimezone(CET),
        source_updated_at=T0,
        created_at=T0,
        updated_at=T0,
    )
    return replace(record, **changes)  # type: ignore[arg-type]


async def test_unknown_account_has_no_snapshot(store: Store) -> None:
    assert await store.get_account_snapshot("never-seen") is None
    assert await store.get_account_snapshots(["never-seen"]) == {}


async def test_saved_subscription_reads_back_equal_with_aware_utc_datetimes(store: Store) -> None:
    saved = subscription(cancel_at_period_end=True, past_due_since=T0.astimezone(CET))

    revision = await store.save_subscription(saved)

    snapshot = await store.get_account_snapshot("ws-1")
    assert snapshot is not None
    assert snapshot.revision == revision == 1
    loaded = snapshot.subscription
    assert loaded is not None
    assert replace(loaded, updated_at=saved.updated_at) == saved
    for value in (loaded.current_period_start, loaded.trial_end, loaded.past_due_since):
        assert value is not None
        assert value.tzinfo is UTC
    assert loaded.trial_end == T0 - timedelta(days=14)


async def test_saving_again_updates_the_row_but_keeps_its_creation_time(store: Store) -> None:
    first = subscription()
    await store.save_subscription(first)

    renewed = replace(
        first,
        status="past_due",
        past_due_since=T0 + timedelta(days=31),
        current_period_end=T0 + timedelta(days=62),
        created_at=T0 + timedelta(days=31),
    )
    revision = await store.save_subscription(renewed)

    snapshot = await store.get_account_snapshot("ws-1")
    assert snapshot is not None
    assert snapshot.revision == revision == 2
    loaded = snapshot.subscription
    assert loaded is not None
    assert loaded == replace(renewed, created_at=T0, updated_at=loaded.updated_at)
    assert loaded.updated_at > T0


async def test_snapshot_holds_the_most_recently_created_subscription(store: Store) -> None:
    older = subscription(status="canceled", created_at=T0)
    newer = subscription(plan_id="business", created_at=T0 + timedelta(days=40))
    await store.save_subscription(newer)
    await store.save_subscription(older)  # saved last, created first

    snapshot = await store.get_account_snapshot("ws-1")

    assert snapshot is not None
    assert snapshot.subscription is not None
    assert snapshot.subscription.id == newer.id


async def test_account_without_subscription_has_snapshot_without_one(store: Store) -> None:
    revision = await store.touch_account("ws-1")

    snapshot = await store.get_account_snapshot("ws-1")

    assert snapshot is not None
    assert (snapshot.revision, snapshot.subscription, snapshot.overrides) == (revision, None, ())


async def test_revision_grows_by_exactly_one_per_change(store: Store) -> None:
    record = subscription()

    revisions = [
        await store.save_subscription(record),
        await store.save_subscription(replace(record, status="canceled")),
        await store.set_overrides(
            "ws-1", [OverrideRecord("limit", "maxUsers", 500)], actor="ops", reason="deal"
        ),
        await store.touch_account("ws-1"),
        await store.set_overrides("ws-1", [], actor="ops", reason="deal ended"),
    ]

    assert revisions == [1, 2, 3, 4, 5]
    snapshot = await store.get_account_snapshot("ws-1")
    assert snapshot is not None
    assert snapshot.revision == 5


async def test_revisions_of_accounts_are_independent(store: Store) -> None:
    assert await store.touch_account("ws-1") == 1
    assert await store.touch_account("ws-1") == 2
    assert await store.touch_account("ws-2") == 1


async def test_concurrent_touches_each_bump_the_revision_once(store: Store) -> None:
    revisions = await asyncio.gather(*(store.touch_account("ws-hot") for _ in range(50)))

    assert sorted(revisions) == list(range(1, 51))
    snapshot = await store.get_account_snapshot("ws-hot")
    assert snapshot is not None
    assert snapshot.revision == 50


async def test_concurrent_changes_of_every_kind_are_all_counted(store: Store) -> None:
    changes = [
        *(store.touch_account("ws-1") for _ in range(10)),
        *(store.save_subscription(subscription()) for _ in range(10)),
        *(
            store.set_overrides(
                "ws-1", [OverrideRecord("limit", "maxUsers", n)], actor="ops", reason=str(n)
            )
            for n in range(10)
        ),
    ]

    revisions = await asyncio.gather(*changes)

    assert sorted(revisions) == list(range(1, 31))


async def test_subscription_id_of_another_account_is_refused_without_a_bump(store: Store) -> None:
    record = subscription("ws-1")
    await store.save_subscription(record)

    with pytest.raises(AlreadyExists):
        await store.save_subscription(replace(record, account_id="ws-2"))

    assert await store.get_account_snapshot("ws-2") is None
    snapshot = await store.get_account_snapshot("ws-1")
    assert snapshot is not None
    assert snapshot.revision == 1


async def test_stripe_subscription_id_is_unique(store: Store) -> None:
    first = subscription()
    await store.save_subscription(first)

    with pytest.raises(AlreadyExists):
        await store.save_subscription(
            subscription(stripe_subscription_id=first.stripe_subscription_id)
        )

    snapshot = await store.get_account_snapshot("ws-1")
    assert snapshot is not None
    assert snapshot.revision == 1


def test_values_outside_the_allowed_sets_are_refused() -> None:
    with pytest.raises(ValueError, match="status"):
        subscription(status="expired")
    with pytest.raises(ValueError, match="interval"):
        subscription(interval="week")
    with pytest.raises(ValueError, match="kind"):
        OverrideRecord("quota", "maxUsers", 5)  # type: ignore[arg-type]


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        subscription(current_period_end=datetime(2026, 4, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        OverrideRecord("limit", "maxUsers", 5, expires_at=datetime(2026, 4, 1))


async def test_set_overrides_replaces_them_and_writes_an_audit_row(store: Store) -> None:
    first = [
        OverrideRecord("limit", "maxUsers", 5000),
        OverrideRecord("feature_grant", "ssoIntegration"),
        OverrideRecord("limit", "maxStorageGB", None),  # unlimited
    ]
    await store.set_overrides("ws-1", first, actor="alice", reason="enterprise deal")

    second = [
        OverrideRecord("limit", "maxUsers", 5000),  # unchanged: keeps alice's row
        OverrideRecord("limit", "maxChannels", 900),
    ]
    revision = await store.set_overrides("ws-1", second, actor="bob", reason="renegotiated")

    snapshot = await store.get_account_snapshot("ws-1")
    assert snapshot is not None
    assert snapshot.revision == revision == 2
    stored = {(o.kind, o.key): o for o in snapshot.overrides}
    assert set(stored) == {("limit", "maxUsers"), ("limit", "maxChannels")}
    assert (stored["limit", "maxUsers"].created_by, stored["limit", "maxUsers"].reason) == (
        "alice",
        "enterprise deal",
    )
    assert stored["limit", "maxChannels"].value == 900
    assert stored["limit", "maxChannels"].created_by == "bob"
    assert stored["limit", "maxChannels"].reason == "renegotiated"

    async with store.engine.connect() as connection:
        audits = (await connection.execute(select(OverrideAudit).order_by(OverrideAudit.id))).all()
    assert [(a.account_id, a.actor, a.action) for a in audits] == [
        ("ws-1", "alice", "set_overrides"),
        ("ws-1", "bob", "set_overrides"),
    ]
    last = audits[-1].details
    assert last["reason"] == "renegotiated"
    assert last["revision"] == 2
    assert [(o["kind"], o["key"], o["value"]) for o in last["old"]] == [
        ("feature_grant", "ssoIntegration", None),
        ("limit", "maxStorageGB", None),
        ("limit", "maxUsers", 5000),
    ]
    assert [(o["kind"], o["key"], o["value"], o["created_by"]) for o in last["new"]] == [
        ("limit", "maxChannels", 900, "bob"),
        ("limit", "maxUsers", 5000, "alice"),
    ]
    assert audits[-1].created_at.tzinfo is UTC


async def test_changed_override_value_replaces_the_old_one(store: Store) -> None:
    await store.set_overrides(
        "ws-1", [OverrideRecord("limit", "maxUsers", 500)], actor="a", reason="r1"
    )
    await store.set_overrides(
        "ws-1", [OverrideRecord("limit", "maxUsers", 800)], actor="b", reason="r2"
    )

    snapshot = await store.get_account_snapshot("ws-1")
    assert snapshot is not None
    assert [(o.key, o.value, o.created_by) for o in snapshot.overrides] == [("maxUsers", 800, "b")]


async def test_duplicate_overrides_are_refused(store: Store) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await store.set_overrides(
            "ws-1",
            [OverrideRecord("limit", "maxUsers", 1), OverrideRecord("limit", "maxUsers", 2)],
            actor="ops",
            reason="typo",
        )

    assert raised.value.field == "overrides"
    assert await store.get_account_snapshot("ws-1") is None


async def test_expired_overrides_are_not_returned(store: Store) -> None:
    now = datetime.now(UTC)
    await store.set_overrides(
        "ws-1",
        [
            OverrideRecord("limit", "maxUsers", 100, expires_at=now - timedelta(seconds=1)),
            OverrideRecord("limit", "maxChannels", 200, expires_at=now + timedelta(days=1)),
            OverrideRecord("feature_grant", "webhooks"),
        ],
        actor="ops",
        reason="trial extension",
    )

    current = await store.get_account_snapshot("ws-1")
    later = await store.get_account_snapshot("ws-1", now=now + timedelta(days=2))

    assert current is not None
    assert later is not None
    assert [o.key for o in current.overrides] == ["webhooks", "maxChannels"]
    assert [o.key for o in later.overrides] == ["webhooks"]


async def test_bulk_snapshots_match_single_ones_and_skip_unknown_accounts(store: Store) -> None:
    accounts = [f"ws-{n}" for n in range(1, 8)]
    for n, account_id in enumerate(accounts):
        if n % 2 == 0:
            await store.save_subscription(subscription(account_id, plan_id="starter"))
        if n % 3 == 0:
            await store.set_overrides(
                account_id, [OverrideRecord("limit", "maxBots", n)], actor="ops", reason="bulk"
            )
        await store.touch_account(account_id)

    bulk = await store.get_account_snapshots([*accounts, "unknown", accounts[0]])

    assert set(bulk) == set(accounts)
    for account_id in accounts:
        assert bulk[account_id] == await store.get_account_snapshot(account_id)


async def test_bulk_snapshots_read_more_accounts_than_one_query_holds(store: Store) -> None:
    accounts = [f"ws-{n}" for n in range(1200)]
    await asyncio.gather(*(store.touch_account(a) for a in accounts[::100]))

    bulk = await store.get_account_snapshots(accounts)

    assert sorted(bulk) == sorted(accounts[::100])
