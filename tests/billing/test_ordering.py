"""A subscription's mirror never moves to a state older than the one recorded, whatever the
delays of Stripe's answers, on one server and across two replicas sharing a database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from entitlements.store.repository import Store
from tests.billing.conftest import WEBHOOK_SECRET, Harness, start_harness
from tests.billing.helpers import subscribe
from tests.stripe_double import WebhookSender, event


@pytest.fixture
async def replica(harness: Harness) -> AsyncIterator[WebhookSender]:
    """A second replica on the same database (its own engine, cache and shim): its sender."""
    other = Store.open(harness.store.engine.url.render_as_string(hide_password=False))
    running, http = await start_harness(harness.settings, other, harness.double)
    try:
        yield WebhookSender(f"http://127.0.0.1:{http.port}/webhooks/stripe", WEBHOOK_SECRET)
    finally:
        await http.stop()
        await running.stop(0)
        await other.close()


async def _plan(h: Harness, account_id: str) -> str:
    """The plan the account's stored subscription grants (what every replica converges to)."""
    snapshot = await h.store.get_account_snapshot(account_id)
    sub = snapshot.subscription if snapshot is not None else None
    granting = sub is not None and sub.status in ("active", "trialing", "past_due")
    return sub.plan_id if granting and sub is not None else "free"


async def _converged(h: Harness, account_id: str, feature: str) -> tuple[bool, str]:
    """CanUseFeature on `h` once the change feed has brought another replica's write here."""
    expected = await _plan(h, account_id)
    for _ in range(50):
        answer = await h.can_use(account_id, feature)
        if answer[1] == expected:
            break
        await asyncio.sleep(0.1)
    return answer


async def _slow_update_then_cancel(
    h: Harness, first: WebhookSender, second: WebhookSender
) -> list[tuple[int, dict[str, Any]]]:
    """Instance 1 of issue 12: `updated` is delivered to `first`, whose fetch reads "active
    business" but answers late; meanwhile the subscription is canceled and `deleted` is
    delivered to `second`; then the slow answer arrives."""
    _, sub = await subscribe(h, "acct-slow", "business")
    sub_id = sub["id"]
    h.double.update_subscription(sub_id, metadata={"account_id": "acct-slow", "seen": "1"})
    slow = h.double.delay("GET", f"subscriptions/{sub_id}")
    updated = asyncio.create_task(
        first.post(event("customer.subscription.updated", h.double.subscriptions[sub_id]))
    )
    await asyncio.wait_for(slow.arrived.wait(), 5)  # Stripe has read "active business"

    now = int(time.time())
    h.double.update_subscription(sub_id, status="canceled", canceled_at=now, ended_at=now)
    deleted = asyncio.create_task(
        second.post(event("customer.subscription.deleted", h.double.subscriptions[sub_id]))
    )
    # The deletion is applied meanwhile, or waits for the slow one's turn: either is allowed.
    await asyncio.wait({deleted}, timeout=0.3)
    slow.release.set()
    return list(await asyncio.gather(updated, deleted))


async def test_a_cancellation_is_not_undone_by_an_earlier_slower_fetch(harness: Harness) -> None:
    h = harness
    answers = await _slow_update_then_cancel(h, h.sender, h.sender)

    assert [status for status, _ in answers] == [200, 200]
    assert await h.can_use("acct-slow", "slaGuarantee") == (False, "free")
    got = (await h.store.get_account_snapshot("acct-slow")).subscription  # type: ignore[union-attr]
    assert got is not None and got.status == "canceled"


async def test_a_cancellation_on_one_replica_is_not_undone_by_a_slower_fetch_on_another(
    harness: Harness, replica: WebhookSender
) -> None:
    h = harness
    answers = await _slow_update_then_cancel(h, h.sender, replica)

    assert [status for status, _ in answers] == [200, 200]
    assert await _plan(h, "acct-slow") == "free"
    assert await _converged(h, "acct-slow", "slaGuarantee") == (False, "free")


async def test_an_upgrade_is_not_undone_by_a_slower_fetch_of_the_plan_before_it(
    harness: Harness, replica: WebhookSender
) -> None:
    # Not only cancellations: any state read earlier never overwrites one read later.
    h = harness
    _, sub = await subscribe(h, "acct-up", "starter")
    sub_id = sub["id"]
    slow = h.double.delay("GET", f"subscriptions/{sub_id}")
    first = asyncio.create_task(
        h.sender.post(event("customer.subscription.updated", h.double.subscriptions[sub_id]))
    )
    await asyncio.wait_for(slow.arrived.wait(), 5)
    h.double.update_subscription(sub_id, price="price_pro_monthly")
    second = asyncio.create_task(
        replica.post(event("customer.subscription.updated", h.double.subscriptions[sub_id]))
    )
    await asyncio.wait({second}, timeout=0.3)
    slow.release.set()
    assert [s for s, _ in await asyncio.gather(first, second)] == [200, 200]

    assert await _plan(h, "acct-up") == "pro"
    assert await _converged(h, "acct-up", "tokenGating") == (True, "pro")
