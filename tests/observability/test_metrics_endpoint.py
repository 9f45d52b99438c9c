"""GET /metrics after traffic: RPC, cache, usage and webhook counters move."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as ent_grpc
from nchat.entitlements.v1 import usage_service_pb2 as usage_pb
from nchat.entitlements.v1 import usage_service_pb2_grpc as usage_grpc
from prometheus_client.parser import text_string_to_metric_families

from entitlements.store.repository import Store
from tests.billing.conftest import WEBHOOK_SECRET, stripe_env
from tests.observability.conftest import Ops, ops_settings, start_ops, stop_ops
from tests.server.conftest import OPS
from tests.stripe_double import StripeDouble, WebhookSender, event


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(ops: Ops) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body, headers = await ops.get("/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    return samples(body)


def value(
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_rpcs_cache_usage_duplicates_and_webhooks(
    tmp_path: Path, sqlite_store: Store
) -> None:
    double = StripeDouble()
    await double.start()
    ops = await start_ops(ops_settings(tmp_path, **stripe_env(double.url)), sqlite_store)
    try:
        before = await scrape(ops)
        async with grpc.aio.insecure_channel(ops.grpc_target) as channel:
            checks = ent_grpc.EntitlementsServiceStub(channel)
            for _ in range(5):
                await checks.CanUseFeature(
                    ent_pb.CanUseFeatureRequest(account_id="ws-m", feature="apiAccess"),
                    metadata=OPS,
                )
            try:
                await checks.CanUseFeature(
                    ent_pb.CanUseFeatureRequest(account_id="ws-m", feature="nope"), metadata=OPS
                )
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
            usage = usage_grpc.UsageServiceStub(channel)
            batch = usage_pb.ReportUsageRequest(
                events=[
                    usage_pb.UsageEvent(
                        account_id="ws-m", metric="messages", delta=1, idempotency_key="k-1"
                    )
                ]
            )
            await usage.ReportUsage(batch, metadata=OPS)
            await usage.ReportUsage(batch, metadata=OPS)  # the duplicate
            try:  # refused by the auth interceptor, before any servicer
                await usage.GetUsage(usage_pb.GetUsageRequest(account_id="ws-m"))
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
            watch = checks.WatchEntitlements(
                ent_pb.WatchEntitlementsRequest(account_ids=["ws-m"], send_initial=True),
                metadata=OPS,
            )
            await watch.read()
            watch.cancel()
            await asyncio.sleep(0.2)  # the server sees the stream end
        sender = WebhookSender(f"{ops.base}/webhooks/stripe", WEBHOOK_SECRET)
        status, _ = await sender.post(event("customer.created", {"id": "cus_1"}))
        assert status == 200
        status, _ = await sender.post(event("customer.created", {"id": "cus_2"}), secrets=["x"])
        assert status == 400
        after = await scrape(ops)
    finally:
        await stop_ops(ops)
        await double.stop()

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    rpc = {"service": "EntitlementsService", "method": "CanUseFeature"}
    assert moved("entitlements_rpc_requests_total", code="OK", **rpc) == 5
    assert moved("entitlements_rpc_requests_total", code="INVALID_ARGUMENT", **rpc) == 1
    assert moved("entitlements_rpc_duration_seconds_count", code="OK", **rpc) == 5
    assert moved("entitlements_rpc_duration_seconds_sum", code="OK", **rpc) > 0
    usage_rpc = {"service": "UsageService", "method": "ReportUsage", "code": "OK"}
    assert moved("entitlements_rpc_requests_total", **usage_rpc) == 2
    refused = {"service": "UsageService", "method": "GetUsage", "code": "UNAUTHENTICATED"}
    assert moved("entitlements_rpc_requests_total", **refused) == 1
    stream = {"service": "EntitlementsService", "method": "WatchEntitlements"}
    assert moved("entitlements_rpc_requests_total", code="CANCELLED", **stream) == 1
    assert moved("entitlements_cache_hits_total") >= 4
    assert moved("entitlements_cache_misses_total") >= 1
    assert 0 < value(after, "entitlements_cache_hit_ratio") <= 1
    assert moved("entitlements_usage_events_applied_total") == 1
    assert moved("entitlements_usage_events_duplicate_total") == 1
    assert moved("entitlements_usage_commits_total") >= 1
    hook = {"source": "stripe", "type": "customer.created"}
    assert moved("entitlements_webhook_events_total", outcome="ignored", **hook) == 1
    assert moved("entitlements_http_requests_total", route="/webhooks/stripe", status="200") == 1
    assert moved("entitlements_http_requests_total", route="/webhooks/stripe", status="400") == 1
    assert value(after, "process_cpu_seconds_total") > 0


async def test_metrics_define_chain_series_for_the_chain_code_to_feed(ops: Ops) -> None:
    from entitlements.observability.metrics import chain_read, set_watcher_lag

    with chain_read("local", "eth_call"):
        pass
    try:
        with chain_read("local", "eth_call"):
            raise TimeoutError
    except TimeoutError:
        pass
    set_watcher_lag("local", head_block=120, processed_block=108)
    metrics = await scrape(ops)
    labels = {"network": "local", "method": "eth_call"}
    assert value(metrics, "entitlements_chain_read_duration_seconds_count", **labels) >= 2
    assert (
        value(metrics, "entitlements_chain_read_errors_total", network="local", kind="TimeoutError")
        >= 1
    )
    assert value(metrics, "entitlements_chain_watcher_lag_blocks", network="local") == 12
