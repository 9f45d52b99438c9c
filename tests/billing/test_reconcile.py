"""`entitlements reconcile stripe`: drift is repaired; a second run changes nothing."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from entitlements.billing import reconcile
from entitlements.server.billing_setup import run_reconcile
from tests.billing.conftest import Harness
from tests.billing.helpers import subscribe
from tests.stripe_double import event


async def test_reconcile_repairs_a_drifted_subscription_and_a_second_run_changes_nothing(
    harness: Harness,
) -> None:
    h = harness
    _, drifted = await subscribe(h, "acct-drift", "starter")
    _, steady = await subscribe(h, "acct-steady", "pro")
    # Changes on Stripe's side whose webhooks never arrived.
    h.double.update_subscription(drifted["id"], price="price_business_yearly")
    customer = h.double.add_customer()
    missed = h.double.add_subscription(
        customer["id"], "price_pro_monthly", metadata={"account_id": "acct-missed"}
    )
    stray = h.double.add_subscription(h.double.add_customer()["id"], "price_pro_monthly")
    before = (await h.store.get_account_snapshot("acct-steady")).revision  # type: ignore[union-attr]

    first = await reconcile(h.billing)

    assert first.seen == 4
    assert first.repaired == {drifted["id"]: "acct-drift", missed["id"]: "acct-missed"}
    assert first.unchanged == 1
    assert first.unlinked == [stray["id"]]
    assert await h.can_use("acct-drift", "slaGuarantee") == (True, "business")
    assert await h.can_use("acct-missed", "tokenGating") == (True, "pro")
    assert (await h.store.get_account_snapshot("acct-steady")).revision == before  # type: ignore[union-attr]

    second = await reconcile(h.billing)

    assert second.repaired == {}
    assert second.unchanged == 3
    assert steady["id"] not in first.repaired


async def test_reconcile_pages_through_more_than_one_page(harness: Harness) -> None:
    h = harness
    for i in range(5):
        h.double.add_subscription(
            h.double.add_customer()["id"],
            "price_starter_monthly",
            metadata={"account_id": f"acct-page-{i}"},
        )

    summary = await reconcile(h.billing, page_size=2)

    assert summary.seen == 5 and summary.changed == 5
    lists = [p for m, p in h.double.list_requests() if (m, p) == ("GET", "subscriptions")]
    assert len(lists) == 3


async def test_reconcile_reports_an_unknown_price_without_guessing(lone_harness: Harness) -> None:
    h = lone_harness
    h.double.add_price("price_legacy", amount=500, interval="month")
    sub = h.double.add_subscription(
        h.double.add_customer()["id"], "price_legacy", metadata={"account_id": "acct-legacy"}
    )

    summary = await reconcile(h.billing)

    assert "price_legacy" in summary.errors[sub["id"]]
    assert await h.store.get_account_snapshot("acct-legacy") is None


async def test_reconcile_command_prints_a_summary(harness: Harness) -> None:
    h = harness
    await subscribe(h, "acct-cli", "starter")

    url = h.store.engine.url.render_as_string(hide_password=False)

    lines = await run_reconcile(replace(h.settings, database_url=url))

    assert "stripe subscriptions seen: 1" in lines
    assert "repaired: 0" in lines


async def test_reconcile_whose_list_was_read_before_a_cancellation_does_not_undo_it(
    harness: Harness,
) -> None:
    h = harness
    _, sub = await subscribe(h, "acct-rec-race", "business")
    # Stripe reads the list (active business); its answer is slow.
    slow = h.double.delay("GET", "subscriptions")
    running = asyncio.create_task(reconcile(h.billing))
    await asyncio.wait_for(slow.arrived.wait(), 5)
    now = int(time.time())
    h.double.update_subscription(sub["id"], status="canceled", canceled_at=now, ended_at=now)
    deleted = event("customer.subscription.deleted", h.double.subscriptions[sub["id"]])
    assert (await h.sender.post(deleted))[0] == 200
    assert await h.can_use("acct-rec-race", "slaGuarantee") == (False, "free")

    slow.release.set()
    await running

    assert await h.can_use("acct-rec-race", "slaGuarantee") == (False, "free")
