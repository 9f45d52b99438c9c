"""How fast a change made through one replica reaches another: woken by NOTIFY on PostgreSQL,
polled on SQLite (and on PostgreSQL when a notification is lost)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as ent_grpc
from sqlalchemy.engine import make_url

from entitlements.config import Settings
from entitlements.server.app import Running, build_deps, create_server
from entitlements.store.listen import ChangeListener
from entitlements.store.migrate import upgrade
from entitlements.store.repository import Store
from tests.conftest import PostgresServer
from tests.faults import FaultyLink
from tests.server.conftest import CALLERS_TOML, OPS, subscription


def feed_settings(tmp_path: Path, **env: str) -> Settings:
    callers = tmp_path / "callers.toml"
    callers.write_text(CALLERS_TOML)
    return Settings.from_env({"ENTITLEMENTS_CALLERS_FILE": str(callers), **env})


@asynccontextmanager
async def two_replicas(url: str, settings: Settings) -> AsyncIterator[tuple[Running, Running]]:
    await upgrade(url)
    started: list[Running] = []
    try:
        for _ in range(2):
            store = Store.open(url)
            running = await create_server(settings, build_deps(settings, store), addr="127.0.0.1:0")
            running.deps.closers.insert(0, store.close)
            await running.server.start()
            started.append(running)
        yield started[0], started[1]
    finally:
        for running in started:
            await running.stop(0)


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not within the time allowed"
        await asyncio.sleep(0.01)


async def change_reaches_b(a: Running, b: Running, plan: str, within: float) -> None:
    """A change made through A reaches B's watcher and B's cached answers within `within` s."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{b.port}") as to_b:
        stub = ent_grpc.EntitlementsServiceStub(to_b)
        ask = ent_pb.CanUseFeatureRequest(account_id="ws", feature="apiAccess")
        before = await stub.CanUseFeature(ask, metadata=OPS)  # B caches the account
        watch = stub.WatchEntitlements(
            ent_pb.WatchEntitlementsRequest(account_ids=["ws"]), metadata=OPS
        )
        await asyncio.sleep(0.1)  # the stream is subscribed
        ent = await a.deps.service.save_subscription(subscription("ws", plan))
        assert ent.revision > before.revision
        pushed = await asyncio.wait_for(watch.read(), within)
        assert (pushed.entitlements.plan_id, pushed.entitlements.revision) == (plan, ent.revision)
        answer = await stub.CanUseFeature(ask, metadata=OPS)
        assert (answer.plan_id, answer.revision) == (plan, ent.revision)
        watch.cancel()


@pytest.mark.postgres
async def test_on_postgres_notify_wakes_every_replica_long_before_the_poll(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = await postgres_server.create_database()
    settings = feed_settings(tmp_path, ENTITLEMENTS_CHANGE_FEED_INTERVAL_SECONDS="60")
    try:
        async with two_replicas(url, settings) as (a, b):
            assert b.deps.feed is not None and b.deps.feed.listener is not None
            await until(lambda: b.deps.feed.listener.listening)  # type: ignore[union-attr]
            await change_reaches_b(a, b, "pro", within=5)  # a minute's poll: NOTIFY did it
            assert b.deps.feed.listener.notifications >= 1
    finally:
        await postgres_server.drop_database(url)


@pytest.mark.postgres
async def test_on_postgres_a_lost_notification_is_delivered_by_the_poll(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = await postgres_server.create_database()
    settings = feed_settings(tmp_path, ENTITLEMENTS_CHANGE_FEED_INTERVAL_SECONDS="0.2")
    try:
        async with two_replicas(url, settings) as (a, b):
            assert b.deps.feed is not None and b.deps.feed.listener is not None
            await b.deps.feed.listener.close()  # B hears no notification from now on
            await change_reaches_b(a, b, "business", within=5)
            assert b.deps.feed.listener.notifications == 0
    finally:
        await postgres_server.drop_database(url)


async def test_on_sqlite_the_poll_brings_a_change_within_a_second_at_the_default_interval(
    tmp_path: Path,
) -> None:
    settings = feed_settings(tmp_path)
    assert settings.change_feed_interval_seconds == 0.25  # the documented figure
    async with two_replicas(f"sqlite+aiosqlite:///{tmp_path / 'feed.db'}", settings) as (a, b):
        assert b.deps.feed is not None and b.deps.feed.listener is None  # nothing to LISTEN on
        await change_reaches_b(a, b, "starter", within=1.0)


@pytest.mark.postgres
async def test_the_listener_reconnects_after_its_connection_is_cut(
    postgres_server: PostgresServer,
) -> None:
    url = await postgres_server.create_database()
    await upgrade(url)
    parsed = make_url(url)
    link = await FaultyLink(parsed.host or "127.0.0.1", parsed.port or 5432).start()
    proxied = parsed.set(host="127.0.0.1", port=link.port)
    woken = asyncio.Event()
    listener = ChangeListener(proxied, woken.set, max_backoff_seconds=0.2)
    store = Store.open(url)
    try:
        listener.start()
        await until(lambda: listener.listening)
        link.cut()
        await until(lambda: not listener.listening)
        link.restore()
        await until(lambda: listener.listening)
        assert listener.connects == 2
        woken.clear()
        await store.touch_account("ws")  # its revision bump notifies
        await asyncio.wait_for(woken.wait(), 5)
        assert listener.notifications >= 1
    finally:
        await listener.close()
        await store.close()
        await link.close()
        await postgres_server.drop_database(url)
