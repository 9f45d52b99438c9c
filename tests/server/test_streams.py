"""WatchEntitlements streams on the sync transport: each holds a thread of a pool of their own,
so a thousand of them stay open while unary calls are answered, and past `max_watchers` a new
stream is refused at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from nchat.entitlements.v1 import entitlements_service_pb2 as pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as pb_grpc

from entitlements.config import Settings
from entitlements.server.app import Running, build_deps, create_server
from entitlements.store.repository import Store
from tests.server.conftest import CALLERS_TOML, CHAT, subscription
from tests.server.helpers import details

STREAMS = 1000
#: Streams per connection (HTTP/2 allows many; spreading them is closer to many callers).
PER_CHANNEL = 250


async def _start(tmp_path: Path, store: Store, **env: str) -> Running:
    callers = tmp_path / "callers.toml"
    callers.write_text(CALLERS_TOML)
    settings = Settings.from_env({"ENTITLEMENTS_CALLERS_FILE": str(callers), **env})
    running = await create_server(settings, build_deps(settings, store), addr="127.0.0.1:0")
    await running.server.start()
    await running.set_serving(True)
    return running


@pytest.fixture
async def channels(lone_server: Running) -> AsyncIterator[list[grpc.aio.Channel]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                grpc.aio.insecure_channel(f"127.0.0.1:{lone_server.port}")
            )
            for _ in range(STREAMS // PER_CHANNEL)
        ]


@pytest.mark.slow
async def test_a_thousand_watch_streams_each_receive_a_change(
    lone_server: Running, channels: list[grpc.aio.Channel]
) -> None:
    stubs = [pb_grpc.EntitlementsServiceStub(c) for c in channels]
    request = pb.WatchEntitlementsRequest(account_ids=["ws-many"], send_initial=True)
    streams = [
        stubs[i % len(stubs)].WatchEntitlements(request, metadata=CHAT) for i in range(STREAMS)
    ]
    try:
        initial = await asyncio.wait_for(asyncio.gather(*(s.read() for s in streams)), 60)
        assert {m.entitlements.plan_id for m in initial} == {"free"}
        assert lone_server.streams.open == STREAMS

        # Unary calls are answered while every stream holds its thread.
        answer = await stubs[0].CanUseFeature(
            pb.CanUseFeatureRequest(account_id="ws-many", feature="apiAccess"),
            metadata=CHAT,
            timeout=5,
        )
        assert not answer.allowed

        await lone_server.deps.service.save_subscription(subscription("ws-many", "pro"))
        changed = await asyncio.wait_for(asyncio.gather(*(s.read() for s in streams)), 60)
        assert [(m.entitlements.plan_id, m.entitlements.revision) for m in changed] == [
            ("pro", 1)
        ] * STREAMS
    finally:
        for stream in streams:
            stream.cancel()
    for _ in range(200):  # each stream's thread notices its caller left and returns
        if lone_server.streams.open == 0:
            break
        await asyncio.sleep(0.05)
    assert lone_server.streams.open == 0


async def test_past_max_watchers_a_stream_is_refused_with_resource_exhausted(
    tmp_path: Path, sqlite_store: Store
) -> None:
    running = await _start(tmp_path, sqlite_store, ENTITLEMENTS_MAX_WATCHERS="3")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.EntitlementsServiceStub(channel)
            request = pb.WatchEntitlementsRequest(account_ids=["ws"], send_initial=True)
            open_ = [stub.WatchEntitlements(request, metadata=CHAT) for _ in range(3)]
            await asyncio.gather(*(s.read() for s in open_))
            refused = stub.WatchEntitlements(request, metadata=CHAT)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await asyncio.wait_for(refused.read(), 5)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "more than 3 watch streams are open" in (caught.value.details() or "")
            info, _ = details(caught.value)
            assert info is not None and info.reason == "ERROR_REASON_OVERLOADED"

            open_.pop().cancel()  # a slot frees: the next stream is served
            for _ in range(100):
                if running.streams.open < 3:
                    break
                await asyncio.sleep(0.02)
            again = stub.WatchEntitlements(request, metadata=CHAT)
            assert (await asyncio.wait_for(again.read(), 5)).entitlements.account_id == "ws"
            for stream in (*open_, again):
                stream.cancel()
    finally:
        await running.stop(0)
