"""ListAuditEntries over gRPC on SQLite and PostgreSQL: every admin change is listed newest
first, filtered by account, actor, action and time, in stable pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from nchat.entitlements.v1 import admin_service_pb2 as pb

from entitlements.config import Settings
from entitlements.server.app import Running
from tests.admin.test_admin_service import invalid_field, stub, ts
from tests.admin.test_manual_billing import create
from tests.server.conftest import CALLERS_TOML, OPS

#: A second admin caller, to filter by actor.
SALES = (("authorization", "Bearer sales-token-000000000001"),)


SALES_CALLER = """
[[callers]]
name = "sales"
tokens = ["sales-token-000000000001"]
scopes = ["admin"]
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    callers = tmp_path / "callers.toml"
    callers.write_text(CALLERS_TOML + SALES_CALLER)
    return Settings.from_env({"ENTITLEMENTS_CALLERS_FILE": str(callers)})


async def overrides(channel: grpc.aio.Channel, account: str, reason: str) -> None:
    await stub(channel).SetAccountOverrides(
        pb.SetAccountOverridesRequest(
            overrides=pb.AccountOverrides(
                account_id=account,
                limits=[pb.LimitOverride(key="maxUsers", value=5000)],
                reason=reason,
            )
        ),
        metadata=OPS,
    )


async def listing(channel: grpc.aio.Channel, **kw: object) -> pb.ListAuditEntriesResponse:
    return await stub(channel).ListAuditEntries(
        pb.ListAuditEntriesRequest(**kw),  # type: ignore[arg-type]
        metadata=OPS,
    )


async def test_every_admin_change_is_listed_newest_first_with_its_details(
    server: Running, channel: grpc.aio.Channel
) -> None:
    await overrides(channel, "acme", "pilot")
    created = await create(channel, "acme")
    sub_id = created.subscription.subscription.id
    await stub(channel).RecordManualInvoice(
        pb.RecordManualInvoiceRequest(
            subscription_id=sub_id, amount_cents=500_000, reference="INV-9", reason="wire"
        ),
        metadata=SALES,
    )

    page = await listing(channel)

    assert [e.action for e in page.entries] == [
        "record_manual_invoice",
        "create_manual_subscription",
        "set_overrides",
    ]
    invoice, contract, override = page.entries
    assert (invoice.actor, invoice.reason, invoice.account_id) == ("sales", "wire", "acme")
    assert invoice.details["reference"] == "INV-9"
    assert invoice.details["amount_cents"] == 500_000
    assert contract.actor == "ops" and contract.reason == "signed order form"
    assert contract.details["subscription_id"] == sub_id
    assert contract.details["new"]["plan_id"] == "enterprise"
    assert contract.details["revision"] == created.revision
    assert "request_digest" not in contract.details
    assert override.details["new"][0]["key"] == "maxUsers"
    assert page.entries[0].id > page.entries[1].id > page.entries[2].id
    assert not page.next_page_token


async def test_audit_filters_by_account_actor_action_and_time(
    server: Running, channel: grpc.aio.Channel
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    await overrides(channel, "acme", "a")
    await overrides(channel, "globex", "b")
    await stub(channel).SetAccountOverrides(
        pb.SetAccountOverridesRequest(
            overrides=pb.AccountOverrides(account_id="globex", granted_features=["webhooks"])
        ),
        metadata=SALES,
    )
    await create(channel, "globex")
    after = datetime.now(UTC) + timedelta(seconds=1)

    def accounts(page: pb.ListAuditEntriesResponse) -> list[tuple[str, str, str]]:
        return [(e.account_id, e.actor, e.action) for e in page.entries]

    assert accounts(await listing(channel, account_id="acme")) == [("acme", "ops", "set_overrides")]
    assert accounts(await listing(channel, actor="sales")) == [("globex", "sales", "set_overrides")]
    assert accounts(await listing(channel, action="create_manual_subscription")) == [
        ("globex", "ops", "create_manual_subscription")
    ]
    assert len((await listing(channel, since=ts(before), until=ts(after))).entries) == 4
    assert (await listing(channel, since=ts(after))).entries == []
    assert (await listing(channel, until=ts(before))).entries == []


async def test_audit_pages_are_stable_while_entries_are_added(
    server: Running, channel: grpc.aio.Channel
) -> None:
    for i in range(5):
        await overrides(channel, f"ws-{i}", str(i))
    first = await listing(channel, page_size=2)
    assert [e.reason for e in first.entries] == ["4", "3"]
    await overrides(channel, "ws-new", "new")  # newer: never shifts the pages handed out
    second = await listing(channel, page_size=2, page_token=first.next_page_token)
    third = await listing(channel, page_size=2, page_token=second.next_page_token)
    assert [e.reason for e in second.entries] == ["2", "1"]
    assert [e.reason for e in third.entries] == ["0"]
    assert not third.next_page_token

    call = stub(channel).ListAuditEntries(
        pb.ListAuditEntriesRequest(page_token=first.next_page_token, actor="ops"), metadata=OPS
    )
    assert await invalid_field(call) == "page_token"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"page_size": -1}, "page_size"),
        ({"page_token": "not-a-token"}, "page_token"),
        ({"action": "drop_tables"}, "action"),
        (
            {
                "since": ts(datetime(2026, 2, 1, tzinfo=UTC)),
                "until": ts(datetime(2026, 1, 1, tzinfo=UTC)),
            },
            "until",
        ),
    ],
)
async def test_bad_audit_requests_name_the_field(
    lone_channel: grpc.aio.Channel, fields: dict[str, object], field: str
) -> None:
    call = stub(lone_channel).ListAuditEntries(
        pb.ListAuditEntriesRequest(**fields),  # type: ignore[arg-type]
        metadata=OPS,
    )
    assert await invalid_field(call) == field
