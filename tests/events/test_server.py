"""Outbound events through a real server: a usage threshold crossed over gRPC reaches a real
receiver, operators list and replay deliveries over AdminService, /metrics shows the queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from nchat.entitlements.v1 import admin_service_pb2_grpc as admin_grpc
from nchat.entitlements.v1 import event_delivery_pb2 as pb
from nchat.entitlements.v1 import usage_service_pb2 as usage_pb
from nchat.entitlements.v1 import usage_service_pb2_grpc as usage_grpc

from entitlements.config import Settings
from entitlements.observability.metrics import render
from entitlements.server.app import Running, build_deps, create_server
from entitlements.store.repository import Store
from tests.events.receiver import SECRET, Receiver, wait_for
from tests.server.conftest import CALLERS_TOML, CHAT, OPS
from tests.server.helpers import details


@pytest.fixture
async def events_server(tmp_path: Path, store: Store, receiver: Receiver) -> AsyncIterator[Running]:
    (tmp_path / "callers.toml").write_text(CALLERS_TOML)
    (tmp_path / "endpoints.toml").write_text(
        f"""
[[endpoints]]
name = "notifier"
url = "{receiver.url}"
secret = "{SECRET}"
event_types = ["usage.threshold_crossed"]
timeout_seconds = 0.5
"""
    )
    settings = Settings.from_env(
        {
            "ENTITLEMENTS_CALLERS_FILE": str(tmp_path / "callers.toml"),
            "ENTITLEMENTS_EVENT_ENDPOINTS": str(tmp_path / "endpoints.toml"),
            "ENTITLEMENTS_EVENT_POLL_INTERVAL_SECONDS": "0.02",
            "ENTITLEMENTS_EVENT_RETRY_BASE_SECONDS": "0.01",
            "ENTITLEMENTS_EVENT_RETRY_MAX_SECONDS": "0.02",
        }
    )
    running = await create_server(settings, build_deps(settings, store), addr="127.0.0.1:0")
    await running.server.start()
    try:
        yield running
    finally:
        await running.stop(0)


async def report(channel: grpc.aio.Channel, key: str, delta: int) -> None:
    await usage_grpc.UsageServiceStub(channel).ReportUsage(
        usage_pb.ReportUsageRequest(
            events=[
                usage_pb.UsageEvent(
                    account_id="ws-1", metric="messages", delta=delta, idempotency_key=key
                )
            ]
        ),
        metadata=OPS,
    )


async def test_a_threshold_crossed_over_grpc_reaches_the_receiver_and_can_be_replayed(
    events_server: Running, receiver: Receiver
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{events_server.port}") as channel:
        admin = admin_grpc.AdminServiceStub(channel)
        receiver.script = ["fail"]
        await report(channel, "a", 7_600)  # free: 10,000 messages, so 76 %
        await report(channel, "b", 1_500)  # 91 %
        await wait_for(lambda: len(receiver.ids) == 2)
        levels = sorted(event["data"]["level"] for _, event in receiver.accepted)
        assert levels == [75, 90]
        # Accepted by the receiver, then recorded by the dispatcher: wait for the record.
        delivered = pb.ListEventDeliveriesRequest(status=pb.EVENT_DELIVERY_STATUS_DELIVERED)
        for _ in range(250):
            if len((await admin.ListEventDeliveries(delivered, metadata=OPS)).deliveries) == 2:
                break
            await asyncio.sleep(0.02)

        first = await admin.ListEventDeliveries(
            pb.ListEventDeliveriesRequest(page_size=1), metadata=OPS
        )
        assert len(first.deliveries) == 1 and first.next_page_token
        second = await admin.ListEventDeliveries(
            pb.ListEventDeliveriesRequest(page_size=1, page_token=first.next_page_token),
            metadata=OPS,
        )
        rows = [*first.deliveries, *second.deliveries]
        assert [r.event_type for r in rows] == ["usage.threshold_crossed"] * 2
        assert {r.status for r in rows} == {pb.EVENT_DELIVERY_STATUS_DELIVERED}
        assert sorted(r.attempts for r in rows) == [1, 2]  # one answered 503 first
        assert {r.account_id for r in rows} == {"ws-1"}
        assert second.next_page_token == ""  # the last page

        replayed = await admin.ReplayEvent(
            pb.ReplayEventRequest(event_id=rows[0].event_id), metadata=OPS
        )
        assert replayed.deliveries == 1
        await wait_for(lambda: len(receiver.accepted) == 3)
        assert receiver.accepted[-1][0] == rows[0].event_id  # the same webhook-id

        nothing = await admin.ReplayFailedEvents(
            pb.ReplayFailedEventsRequest(endpoint="notifier"), metadata=OPS
        )
        assert nothing.deliveries == 0

    metrics = render().decode()
    assert "entitlements_events_queue_depth" in metrics
    assert 'entitlements_events_attempt_failures_total{endpoint="notifier"}' in metrics


async def test_event_rpcs_refuse_bad_input_naming_the_field(events_server: Running) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{events_server.port}") as channel:
        admin = admin_grpc.AdminServiceStub(channel)
        for call, field in (
            (
                admin.ListEventDeliveries(
                    pb.ListEventDeliveriesRequest(page_token="x"), metadata=OPS
                ),
                "page_token",
            ),
            (
                admin.ListEventDeliveries(
                    pb.ListEventDeliveriesRequest(page_size=-1), metadata=OPS
                ),
                "page_size",
            ),
            (
                admin.ReplayFailedEvents(
                    pb.ReplayFailedEventsRequest(endpoint="nope"), metadata=OPS
                ),
                "endpoint",
            ),
            (admin.ReplayEvent(pb.ReplayEventRequest(), metadata=OPS), "event_id"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert details(caught.value)[1] == [field]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin.ReplayEvent(pb.ReplayEventRequest(event_id="evt_none"), metadata=OPS)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin.ListEventDeliveries(pb.ListEventDeliveriesRequest(), metadata=CHAT)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
