"""Sales-led plans on /admin and in `entitlements report`: manual contracts in MRR (USD ones in
the figures, others listed apart), manual invoices as revenue, and the audit log section."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest

from entitlements.admin.charts import money
from entitlements.admin.report import report
from entitlements.config import Settings
from tests.admin.test_manual_billing import create, invoice
from tests.observability.conftest import Ops

OPS_TOKEN = "ops-token-0000000000001"


@pytest.fixture
async def channel(ops: Ops) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(ops.grpc_target) as ch:
        yield ch


async def test_admin_page_counts_contracts_and_lists_the_audit_log(
    ops: Ops, channel: grpc.aio.Channel
) -> None:
    usd = await create(channel, "acme", price_cents=1_200_000, interval=2)  # yearly
    await create(channel, "acme-eu", currency="eur", price_cents=300_000)
    await invoice(channel, usd.subscription.subscription.id, reference="INV-<1>")

    status, html, _ = await ops.get(f"/admin?token={OPS_TOKEN}")

    assert status == 200
    assert f'data-metric="mrr">{money(100_000)}<' in html
    assert f'data-metric="total_revenue">{money(500_000)}<' in html
    assert "Not in the USD MRR: 1 contracts in EUR (MRR 300,000 minor units)" in html
    section = html[html.index('id="audit_log"') :]
    assert section.count("<tr data-audit=") == 3
    assert "record manual invoice" in section and "create manual subscription" in section
    assert "INV-&lt;1&gt;: 500,000 usd" in section  # escaped
    assert "signed order form" in section


async def test_report_counts_manual_contracts_and_invoices(
    ops: Ops, channel: grpc.aio.Channel
) -> None:
    usd = await create(channel, "acme", price_cents=90_000)
    await create(channel, "acme-eu", currency="eur", price_cents=300_000)
    await invoice(channel, usd.subscription.subscription.id, amount_cents=90_000)
    settings = Settings.from_env(
        {
            "ENTITLEMENTS_DEV_MODE": "1",
            "ENTITLEMENTS_DATABASE_URL": str(ops.running.deps.store.engine.url),
        }
    )

    lines = (await report(settings)).splitlines()
    assert f"MRR                     {money(90_000)}" in lines
    manual = next(line for line in lines if line.startswith("  manual "))
    assert manual.split() == ["manual", money(90_000), "1", "2"]
    assert "Not in the USD MRR: 1 contracts in EUR (MRR 300,000 minor units)" in lines

    as_json = json.loads(await report(settings, as_json=True))
    assert as_json["mrr_cents"] == 90_000
    assert as_json["mrr_other_currencies"] == [
        {"currency": "eur", "payments": 1, "amount_minor": 300_000}
    ]
    assert {
        "payment_method": "manual",
        "revenue_cents": 90_000,
        "payments": 1,
        "active_subscriptions": 2,
    } in as_json["payment_methods"]


async def test_admin_page_says_when_nothing_was_audited(ops: Ops) -> None:
    status, html, _ = await ops.get(f"/admin?token={OPS_TOKEN}")
    assert status == 200
    assert "no admin change yet" in html[html.index('id="audit_log"') :]
