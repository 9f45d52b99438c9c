"""A real gRPC server on a free port, with a real store, for the servicer tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from entitlements.config import Settings
from entitlements.server.app import Running, build_deps, create_server
from entitlements.store.migrate import upgrade
from entitlements.store.records import SubscriptionRecord
from entitlements.store.repository import Store

CALLERS_TOML = """
[[callers]]
name = "chat-backend"
tokens = ["chat-backend-token-0001"]
scopes = ["entitlements:read"]

[[callers]]
name = "message-service"
tokens = ["message-service-token-01"]
scopes = ["usage:write"]

[[callers]]
name = "ops"
tokens = ["ops-token-0000000000001", "ops-token-rotated-00002"]
scopes = ["entitlements:read", "usage:write", "usage:read", "tokengate:read",
          "tokengate:write", "billing:write", "crypto:read", "crypto:write", "admin"]
"""

CHAT = (("authorization", "Bearer chat-backend-token-0001"),)
MESSAGES = (("authorization", "Bearer message-service-token-01"),)
OPS = (("authorization", "Bearer ops-token-0000000000001"),)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    callers = tmp_path / "callers.toml"
    callers.write_text(CALLERS_TOML)
    return Settings.from_env({"ENTITLEMENTS_CALLERS_FILE": str(callers)})


async def _start(settings: Settings, store: Store) -> Running:
    running = await create_server(settings, build_deps(settings, store), addr="127.0.0.1:0")
    await running.server.start()
    await running.set_serving(True)
    return running


@pytest.fixture
async def server(settings: Settings, store: Store) -> AsyncIterator[Running]:
    """A server on each database backend."""
    running = await _start(settings, store)
    try:
        yield running
    finally:
        await running.stop(0)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'lone.db'}"
    await upgrade(url)
    store = Store.open(url)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def lone_server(settings: Settings, sqlite_store: Store) -> AsyncIterator[Running]:
    """A server on SQLite only, for behaviour that does not depend on the database."""
    running = await _start(settings, sqlite_store)
    try:
        yield running
    finally:
        await running.stop(0)


@pytest.fixture
async def channel(server: Running) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture
async def lone_channel(lone_server: Running) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{lone_server.port}") as ch:
        yield ch


def subscription(
    account_id: str,
    plan_id: str,
    status: str = "active",
    *,
    sub_id: str | None = None,
    period_end: datetime | None = None,
    cancel_at_period_end: bool = False,
    payment_method: str = "card",
    past_due_since: datetime | None = None,
) -> SubscriptionRecord:
    now = datetime.now(UTC)
    return SubscriptionRecord(
        id=sub_id or f"sub_{account_id}",
        account_id=account_id,
        plan_id=plan_id,
        status=status,  # type: ignore[arg-type]
        interval="month",
        payment_method=payment_method,  # type: ignore[arg-type]
        current_period_start=now - timedelta(days=1),
        current_period_end=period_end or now + timedelta(days=29),
        cancel_at_period_end=cancel_at_period_end,
        past_due_since=past_due_since,
    )
