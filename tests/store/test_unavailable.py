"""A database that cannot be reached is `Unavailable`; a wrong statement is not."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from entitlements.errors import Unavailable
from entitlements.store.failures import UNAVAILABLE_MESSAGE
from entitlements.store.migrate import current_revision, upgrade
from entitlements.store.records import SubscriptionRecord
from entitlements.store.repository import Store
from tests.conftest import PostgresServer

Call = Callable[[Store], Awaitable[object]]
STORE_CALLS: dict[str, Call] = {
    "ping": lambda store: store.ping(),
    "get_account_snapshot": lambda store: store.get_account_snapshot("ws-1"),
    "get_account_snapshots": lambda store: store.get_account_snapshots(["ws-1"]),
    "touch_account": lambda store: store.touch_account("ws-1"),
    "set_overrides": lambda store: store.set_overrides("ws-1", [], actor="ops", reason="test"),
    "save_subscription": lambda store: store.save_subscription(
        SubscriptionRecord(
            id="s1",
            account_id="ws-1",
            plan_id="pro",
            status="active",
            interval="month",
            payment_method="card",
        )
    ),
}


UNREACHABLE: dict[str, Callable[[Path], str]] = {
    "postgres-closed-port": lambda _: "postgresql+asyncpg://postgres@127.0.0.1:1/test",
    "sqlite-missing-directory": lambda tmp: f"sqlite:///{tmp / 'missing' / 'entitlements.db'}",
}


@pytest.fixture(params=list(UNREACHABLE))
def unreachable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return UNREACHABLE[request.param](tmp_path)


@pytest.mark.parametrize("call", list(STORE_CALLS))
async def test_store_call_on_unreachable_database_is_unavailable(
    unreachable_url: str, call: str
) -> None:
    async with Store.open(unreachable_url) as store:
        with pytest.raises(Unavailable):
            await STORE_CALLS[call](store)


async def test_migrating_an_unreachable_database_is_unavailable(unreachable_url: str) -> None:
    with pytest.raises(Unavailable):
        await upgrade(unreachable_url)
    with pytest.raises(Unavailable):
        await current_revision(unreachable_url)


async def test_unavailable_detail_names_the_database_without_its_password() -> None:
    """The detail (logs, the command line) says where; the message (callers) does not."""
    async with Store.open("postgresql://postgres:s3cret@127.0.0.1:1/test") as store:
        with pytest.raises(Unavailable) as raised:
            await store.ping()

    assert "127.0.0.1:1" in str(raised.value)
    assert "s3cret" not in str(raised.value)
    assert raised.value.message == UNAVAILABLE_MESSAGE


@pytest.mark.postgres
async def test_missing_postgres_database_is_unavailable(postgres_server: PostgresServer) -> None:
    url = await postgres_server.create_database()
    await postgres_server.drop_database(url)

    async with Store.open(url) as store:
        with pytest.raises(Unavailable):
            await store.ping()


async def test_statement_against_an_unmigrated_database_is_an_error_not_unavailable(
    database_url: str,
) -> None:
    async with Store.open(database_url) as store:
        with pytest.raises(DBAPIError) as raised:
            await store.get_account_snapshot("ws-1")

    assert not isinstance(raised.value, Unavailable)


@pytest.mark.postgres
async def test_store_reconnects_after_postgres_drops_its_connections(
    postgres_server: PostgresServer,
) -> None:
    url = await postgres_server.create_database()
    try:
        await upgrade(url)
        async with Store.open(url) as store:
            assert await store.touch_account("ws-1") == 1
            async with Store.open(url) as other, other.engine.connect() as connection:
                await connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )

            assert await store.touch_account("ws-1") == 2
    finally:
        await postgres_server.drop_database(url)
