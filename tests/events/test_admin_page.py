"""The /admin page's outbound-events section: the queue, failures per endpoint and the latest
failed deliveries, from the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from entitlements.events.types import new_event
from entitlements.store.events_repository import EventsRepository, Outcome
from entitlements.store.repository import Store
from tests.events.receiver import SECRET
from tests.observability.conftest import Ops, ops_settings, start_ops, stop_ops
from tests.observability.conftest import sqlite_store as sqlite_store

OPS_TOKEN = "ops-token-0000000000001"


@pytest.fixture
async def ops(tmp_path: Path, sqlite_store: Store) -> AsyncIterator[Ops]:
    endpoints = tmp_path / "endpoints.toml"
    # An endpoint nothing listens on; the dispatcher's retries are far off.
    endpoints.write_text(
        f'[[endpoints]]\nname = "notifier"\nurl = "http://127.0.0.1:9/x"\nsecret = "{SECRET}"\n'
    )
    settings = ops_settings(
        tmp_path,
        ENTITLEMENTS_EVENT_ENDPOINTS=str(endpoints),
        ENTITLEMENTS_EVENT_RETRY_BASE_SECONDS="3600",
    )
    running = await start_ops(settings, sqlite_store)
    try:
        yield running
    finally:
        await stop_ops(running)


async def test_the_admin_page_shows_the_event_queue_and_failed_deliveries(
    ops: Ops,
    sqlite_store: Store,
) -> None:
    repository = EventsRepository(sqlite_store.engine)
    now = datetime.now(UTC)
    failed = new_event("payment.failed", "ws-<b>", {}, now=now)
    await repository.append(failed)
    await repository.append(new_event("payment.failed", "ws-2", {}, now=now))
    # The server's dispatcher may fan out and try them first (its retries are an hour off).
    await repository.fan_out([("notifier", frozenset())], 500)
    rows = await repository.list_deliveries()
    [first] = [r for r in rows if r.event_id == failed.id]
    await repository.record([Outcome(first.id, "failed", error="HTTP 503")])

    status, body, _ = await ops.get("/admin", headers={"Authorization": f"Bearer {OPS_TOKEN}"})

    assert status == 200
    assert "<h2>Outbound events</h2>" in body
    assert '<div class="v" id="events_queue_depth">1</div>' in body
    assert '<div class="v" id="events_failed">1</div>' in body
    assert failed.id in body and "HTTP 503" in body
    assert "ws-&lt;b&gt;" in body and "ws-<b>" not in body  # escaped
