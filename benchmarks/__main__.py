"""`make bench`: every benchmark in one run, each beside the same run's health-check baseline.

Prints absolute figures and ratios; BENCHMARKS.md records a run with the machine and the date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as ent_grpc
from nchat.entitlements.v1 import usage_service_pb2 as usage_pb
from nchat.entitlements.v1 import usage_service_pb2_grpc as usage_grpc

from benchmarks.databases import POSTGRES_URL, drop_postgres_database, fresh_postgres_database
from benchmarks.harness import (
    Latency,
    Result,
    ScriptServer,
    Server,
    drive,
    latency_at_rate,
    pin_client,
)


def line(
    result: Result, baseline: Result | None, unit: str = "calls", sync: Result | None = None
) -> str:
    """One figure; with `baseline` (the grpc.aio reference server's health check) and `sync`
    (the sync-grpc reference server's), its ratios to each."""
    text = (
        f"{result.name:<44} {result.items_per_second:>10,.0f} {unit}/s"
        f"  {result.cpu_per_call_us:>8,.0f} us server CPU/call"
    )
    if baseline is not None:
        text += (
            f"  | aio ref: {result.calls_per_second / baseline.calls_per_second:5.2f}x calls/s,"
            f" {result.cpu_per_call_us / baseline.cpu_per_call_us:5.2f}x CPU/call"
        )
    if sync is not None:
        text += (
            f"  | sync ref: {result.calls_per_second / sync.calls_per_second:5.2f}x calls/s,"
            f" {result.cpu_per_call_us / sync.cpu_per_call_us:5.2f}x CPU/call"
        )
    return text


async def reference(transport: str, seconds: float) -> Result:
    """A trivial health server on `transport` in its own process, pinned like the service and
    driven the same way: "sync" (`grpc.server`, 16 threads: the floor of Python gRPC, the hot
    path's target) or "aio" (`grpc.aio` on uvloop, the transport the service used before)."""
    with ScriptServer("benchmarks.reference", "--transport", transport) as server:
        return await health_baseline(
            server, seconds, f"grpc.health.v1.Health/Check ({transport}-grpc reference)"
        )


async def sync_reference(seconds: float) -> Result:
    return await reference("sync", seconds)


async def health_baseline(
    server: Server | ScriptServer,
    seconds: float,
    name: str = "grpc.health.v1.Health/Check (baseline)",
) -> Result:
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        return await drive(
            name,
            server,
            lambda i: stub.Check(request),
            seconds=seconds,
        )


async def usage_throughput(server: Server, name: str, seconds: float) -> Result:
    """Batches of 100 events over 20 accounts, 10 % of them repeats of already-sent keys."""
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = usage_grpc.UsageServiceStub(channel)

        def batch(i: int) -> usage_pb.ReportUsageRequest:
            events = []
            for j in range(100):
                # the first 10 events repeat the previous batch's (retries)
                key = f"b{i - 1}-{j}" if j < 10 and i > 0 else f"b{i}-{j}"
                events.append(
                    usage_pb.UsageEvent(
                        account_id=f"ws-{(i + j) % 20}"
                        if not key.startswith(f"b{i - 1}-")
                        else f"ws-{(i - 1 + j) % 20}",
                        metric="messages",
                        delta=1,
                        idempotency_key=key,
                    )
                )
            return usage_pb.ReportUsageRequest(events=events)

        return await drive(
            name, server, lambda i: stub.ReportUsage(batch(i)), seconds=seconds, items_per_call=100
        )


def hot_calls(channel: grpc.aio.Channel) -> dict[str, Callable[[int], Awaitable[object]]]:
    """The hot RPCs of other services, as benchmark calls."""
    ent = ent_grpc.EntitlementsServiceStub(channel)
    usage = usage_grpc.UsageServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    check = health_pb2.HealthCheckRequest()
    can_use = ent_pb.CanUseFeatureRequest(account_id="ws-1", feature="customBranding")
    check_limit = usage_pb.CheckLimitRequest(account_id="ws-1", limit="maxMessages")
    many = ent_pb.CheckFeaturesRequest(
        checks=[
            ent_pb.CanUseFeatureRequest(account_id=f"ws-{i % 20}", feature="apiAccess")
            for i in range(100)
        ]
    )
    return {
        "grpc.health.v1.Health/Check (baseline)": lambda i: health.Check(check),
        "EntitlementsService/CanUseFeature": lambda i: ent.CanUseFeature(can_use),
        "UsageService/CheckLimit (tracked usage)": lambda i: usage.CheckLimit(check_limit),
        "EntitlementsService/CheckFeatures x100": lambda i: ent.CheckFeatures(many),
    }


async def latencies(server: Server, rates: dict[str, float], seconds: float) -> list[Latency]:
    async with grpc.aio.insecure_channel(server.target) as channel:
        calls = hot_calls(channel)
        return [
            await latency_at_rate(name, calls[name], rate=rate, seconds=seconds)
            for name, rate in rates.items()
        ]


async def hot_checks(server: Server, seconds: float) -> list[Result]:
    async with grpc.aio.insecure_channel(server.target) as channel:
        ent = ent_grpc.EntitlementsServiceStub(channel)
        usage = usage_grpc.UsageServiceStub(channel)
        can_use = ent_pb.CanUseFeatureRequest(account_id="ws-1", feature="customBranding")
        check_limit = usage_pb.CheckLimitRequest(account_id="ws-1", limit="maxMessages")
        many = ent_pb.CheckFeaturesRequest(
            checks=[
                ent_pb.CanUseFeatureRequest(account_id=f"ws-{i % 20}", feature="apiAccess")
                for i in range(100)
            ]
        )
        return [
            await drive(
                "EntitlementsService/CanUseFeature",
                server,
                lambda i: ent.CanUseFeature(can_use),
                seconds=seconds,
            ),
            await drive(
                "UsageService/CheckLimit (tracked usage)",
                server,
                lambda i: usage.CheckLimit(check_limit),
                seconds=seconds,
            ),
            await drive(
                "EntitlementsService/CheckFeatures x100",
                server,
                lambda i: ent.CheckFeatures(many),
                seconds=seconds,
                items_per_call=100,
            ),
        ]


async def main(seconds: float, skip_postgres: bool) -> dict[str, object]:
    pin_client()
    report: dict[str, object] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "results": [],
    }
    results: list[dict[str, object]] = report["results"]  # type: ignore[assignment]

    def record(
        result: Result, baseline: Result | None, unit: str = "calls", sync: Result | None = None
    ) -> None:
        print(line(result, baseline, unit, sync), flush=True)
        results.append(
            {
                "name": result.name,
                "per_second": round(result.items_per_second),
                "calls_per_second": round(result.calls_per_second),
                "server_cpu_per_call_us": round(result.cpu_per_call_us, 1),
                "ratio_calls_vs_aio_reference": None
                if baseline is None
                else round(result.calls_per_second / baseline.calls_per_second, 3),
                "ratio_cpu_vs_aio_reference": None
                if baseline is None
                else round(result.cpu_per_call_us / baseline.cpu_per_call_us, 3),
                "ratio_calls_vs_sync_reference": None
                if sync is None
                else round(result.calls_per_second / sync.calls_per_second, 3),
                "ratio_cpu_vs_sync_reference": None
                if sync is None
                else round(result.cpu_per_call_us / sync.cpu_per_call_us, 3),
            }
        )

    print(
        f"server pinned to core 0, client to core 1; {seconds:.0f} s per figure; ratios to the"
        " aio and sync reference servers' health checks (target for the hot checks: <= 1.15x"
        " the sync reference's CPU/call)"
    )
    sync_ref = await sync_reference(seconds)
    record(sync_ref, None)
    aio_ref = await reference("aio", seconds)
    record(aio_ref, None, sync=sync_ref)
    with Server() as server:
        baseline = await health_baseline(server, seconds)
        record(baseline, aio_ref, sync=sync_ref)
        for result in await hot_checks(server, seconds):
            record(result, aio_ref, "checks" if "x100" in result.name else "calls", sync_ref)
        record(
            await usage_throughput(server, "UsageService/ReportUsage, SQLite", seconds),
            aio_ref,
            "events",
            sync_ref,
        )
        maxima = {str(r["name"]): float(r["calls_per_second"]) for r in results}  # type: ignore[arg-type]
        half = {name: maxima[name] / 2 for name in hot_calls_names()}
        print(f"latency at half of each RPC's maximum rate, open loop, {seconds:.0f} s:")
        latency_rows: list[dict[str, object]] = []
        report["latency"] = latency_rows
        for lat in await latencies(server, half, seconds):
            print(
                f"{lat.name:<44} {lat.rate:>8,.0f} calls/s offered  p50 {lat.p50_ms:6.2f} ms"
                f"  p99 {lat.p99_ms:6.2f} ms  max {lat.max_ms:6.1f} ms  errors {lat.errors}",
                flush=True,
            )
            latency_rows.append(dict(lat.__dict__))
        from benchmarks.clients import bench_local_vs_rpc

        clients = await bench_local_vs_rpc(server.target, seconds)
        print(
            f"{'client can_use_feature, local evaluation':<44}"
            f" {clients['local_checks_per_second']:>10,} checks/s"
            f"  | {clients['local_vs_rpc']}x the RPC client"
            f" ({clients['rpc_checks_per_second']:,} checks/s,"
            f" {clients['rpc_concurrency']} in flight); sync client local:"
            f" {clients['sync_local_checks_per_second']:,} checks/s; per CPU-second of the"
            f" checking thread: {clients['local_checks_per_cpu_second']:,} asyncio,"
            f" {clients['sync_local_checks_per_cpu_second']:,} sync (targets 600,000 / 1,000,000)",
            flush=True,
        )
        report["clients"] = clients
    from benchmarks.tracing import bench_tracing

    # The untraced figure is the one above (same call, same kind of server); tracing on here.
    can_use_off = next(r for r in results if r["name"] == "EntitlementsService/CanUseFeature")
    traced = await bench_tracing(seconds, off=False)
    record(traced["on"], baseline, sync=sync_ref)
    print(
        f"tracing: CanUseFeature {can_use_off['calls_per_second']:,} calls/s off (nothing"
        f" installed), {round(traced['on'].calls_per_second):,} on;"
        f" {traced['spans_received']:,} spans received over OTLP",
        flush=True,
    )
    report["tracing"] = {"spans_received": traced["spans_received"]}
    from benchmarks.tokengate import bench_verify_token

    gate = await bench_verify_token(seconds=seconds)
    report["tokengate"] = gate
    gate_baseline = gate.pop("baseline_result")
    record(gate_baseline, aio_ref, sync=sync_ref)
    record(gate.pop("cached_result"), aio_ref, sync=sync_ref)
    print(f"token gating: {json.dumps(gate)}", flush=True)
    from benchmarks.hot_rounds import bench_hot_rounds, print_summary

    rounds = await bench_hot_rounds(rounds=5, seconds=max(seconds * 0.8, 1.0))
    print_summary(rounds)
    report["hot_rounds"] = rounds
    memory = cache_memory(100_000)
    print(
        f"entitlement cache, {memory['accounts']:,.0f} accounts: {memory['mb']:.1f} MB"
        f" ({memory['bytes_per_account']:.0f} bytes/account; target < 100 MB)",
        flush=True,
    )
    report["cache_memory"] = memory
    if skip_postgres:
        print("PostgreSQL: skipped (--no-postgres)")
    else:
        database = await fresh_postgres_database()
        if database is None:
            print(f"PostgreSQL: not reachable at {POSTGRES_URL}; skipped")
        else:
            try:
                with Server(database) as server:
                    baseline = await health_baseline(server, seconds)
                    record(baseline, aio_ref, sync=sync_ref)
                    record(
                        await usage_throughput(
                            server, "UsageService/ReportUsage, PostgreSQL", seconds
                        ),
                        aio_ref,
                        "events",
                        sync_ref,
                    )
            finally:
                await drop_postgres_database(database)
        from benchmarks.freshness import bench_freshness

        print("freshness (issue 14): change -> first answer that shows it, defaults", flush=True)
        report["freshness"] = await bench_freshness()
    return report


def hot_calls_names() -> list[str]:
    return [
        "grpc.health.v1.Health/Check (baseline)",
        "EntitlementsService/CanUseFeature",
        "UsageService/CheckLimit (tracked usage)",
        "EntitlementsService/CheckFeatures x100",
    ]


def cache_memory(accounts: int) -> dict[str, float]:
    """Python memory held by the entitlement cache filled with `accounts` accounts: a third on
    the free plan (never stored), the rest with a subscription, one in ten with overrides."""
    import gc
    import tracemalloc
    from datetime import timedelta

    from entitlements.cache import EntitlementCache
    from entitlements.policies import default_catalog
    from entitlements.state import derive
    from entitlements.store.records import AccountSnapshot, OverrideRecord, SubscriptionRecord

    catalog = default_catalog()
    now = datetime.now(UTC)
    plans = ["starter", "pro", "business", "enterprise"]

    async def never(account_id: str) -> object:
        raise AssertionError

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cache = EntitlementCache(never, maxsize=accounts, ttl_seconds=60)  # type: ignore[arg-type]
    for i in range(accounts):
        account_id = f"workspace-{i:08d}"
        snapshot = None
        if i % 3:
            overrides = ()
            if i % 10 == 0:
                overrides = (OverrideRecord(kind="limit", key="maxUsers", value=5000),)
            snapshot = AccountSnapshot(
                account_id=account_id,
                revision=i % 7 + 1,
                subscription=SubscriptionRecord(
                    id=f"sub_{i:08d}",
                    account_id=account_id,
                    plan_id=plans[i % 4],
                    status="active",
                    interval="month",
                    payment_method="card",
                    stripe_customer_id=f"cus_{i:010d}",
                    stripe_subscription_id=f"sub_{i:014d}",
                    stripe_price_id="price_pro_monthly",
                    current_period_start=now - timedelta(days=3),
                    current_period_end=now + timedelta(days=27),
                    created_at=now,
                    updated_at=now,
                ),
                overrides=overrides,
            )
        cache.put(derive(catalog, account_id, snapshot, now=now, past_due_grace=timedelta(7)))
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(cache) == accounts
    return {"accounts": accounts, "mb": used / 1e6, "bytes_per_account": used / accounts}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per figure")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--json", type=Path, default=Path(".bench/results.json"))
    args = parser.parse_args()
    import uvloop

    # The client on uvloop too: a slower load generator would show as server latency.
    outcome = uvloop.run(main(args.seconds, args.no_postgres))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(outcome, indent=2))
    print(f"results written to {args.json}", file=sys.stderr)
