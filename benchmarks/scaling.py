"""What a second core and a second replica buy: `serve --workers 2` against one worker
(`CanUseFeature`), and two replicas' usage ingest on one PostgreSQL against one.

This machine has 2 cores and the load generator needs one of them, so two workers can never
have two cores to themselves here. The CPU is therefore accounted, not assumed:

- the server's CPU per call is the user + system time of the supervisor and all its workers
  (`/proc`), over the calls answered; each worker's share of it shows the kernel's
  `SO_REUSEPORT` spreading the connections (the load generator opens 8 connections);
- the load generator's CPU per call is this process's own (every thread);
- what a second core buys = (1 core-second / server CPU per call with 2 workers) x 2, against
  (1 core-second / server CPU per call with 1 worker): the calls/s two workers give with a
  core each, if each call costs what it cost here. It is 2.00x if a worker's call costs the
  same beside a second worker (nothing shared is contended), less if it costs more.
  The measured calls/s are printed beside it: with 1 worker the server has core 0 and the
  load generator core 1; with 2 workers both cores are shared by both workers and the load
  generator, so that figure is bounded by the machine, not by the service.

On PostgreSQL the same for replicas (separate `serve` processes, one database): each replica's
CPU per event, the load generator's, and PostgreSQL's own: the CPU of the backends serving
this benchmark's database (`pg_stat_activity`, `/proc`) and the commits of that database
(`pg_stat_database.xact_commit`). PostgreSQL's CPU per event is what bounds more replicas on
one PostgreSQL: events/s <= PostgreSQL's cores / its CPU per event (WAL writer and
checkpointer, shared with other databases, are not counted: a lower bound of its cost). The
exactness of the run is checked: the counters' totals equal the events answered APPLIED.

`python -m benchmarks.scaling [--seconds S] [--no-postgres]`; `make bench` runs it too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as ent_grpc
from nchat.entitlements.v1 import usage_service_pb2 as usage_pb
from nchat.entitlements.v1 import usage_service_pb2_grpc as usage_grpc

from benchmarks.harness import (
    Result,
    Server,
    children,
    cpu_seconds,
    drive,
    pin_client,
    tree_cpu_seconds,
)

CONNECTIONS = 8
ACCOUNTS = 20


@contextlib.asynccontextmanager
async def _channels(targets: list[str], per_target: int) -> AsyncIterator[list[grpc.aio.Channel]]:
    # A local subchannel pool per channel: each channel is its own TCP connection, which
    # SO_REUSEPORT hands to one worker.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(target, options=options)
        for target in targets
        for _ in range(per_target)
    ]
    try:
        yield channels
    finally:
        for channel in channels:
            await channel.close()


@dataclass(frozen=True)
class WorkersFigure:
    workers: int
    result: Result
    worker_shares: list[float]

    def as_dict(self) -> dict[str, object]:
        return {
            "workers": self.workers,
            "calls_per_second": round(self.result.calls_per_second),
            "server_cpu_per_call_us": round(self.result.cpu_per_call_us, 1),
            "client_cpu_per_call_us": round(self.result.client_cpu_per_call_us, 1),
            "calls_per_server_core_second": round(1e6 / self.result.cpu_per_call_us),
            "worker_cpu_shares": [round(s, 3) for s in self.worker_shares],
        }


async def can_use_feature(workers: int, seconds: float) -> WorkersFigure:
    cores = "0" if workers == 1 else "0,1"
    args = () if workers == 1 else ("--workers", str(workers))
    with Server(args=args, cores=cores) as server:
        await asyncio.sleep(1.0 if workers == 1 else 3.0)  # every worker up and warm
        request = ent_pb.CanUseFeatureRequest(account_id="ws-1", feature="customBranding")
        async with _channels([server.target], CONNECTIONS) as channels:
            stubs = [ent_grpc.EntitlementsServiceStub(c) for c in channels]
            pids = children(server.pid) or [server.pid]
            before = {pid: cpu_seconds(pid) for pid in pids}
            result = await drive(
                f"CanUseFeature, {workers} worker(s)",
                server,
                lambda i: stubs[i % len(stubs)].CanUseFeature(request),
                seconds=seconds,
                server_cpu=lambda: tree_cpu_seconds(server.pid),
            )
            used = [cpu_seconds(pid) - before[pid] for pid in pids]
    total = sum(used) or 1.0
    return WorkersFigure(workers, result, [u / total for u in used])


def _batch(i: int, previous: int, offset: int) -> usage_pb.ReportUsageRequest:
    """benchmarks.__main__'s load: 100 events over 20 accounts (`ws-<offset>` on), the first
    10 repeating batch `previous`'s."""
    events = []
    for j in range(100):
        repeat = j < 10 and previous >= 0
        batch = previous if repeat else i
        events.append(
            usage_pb.UsageEvent(
                account_id=f"ws-{offset + (batch + j) % ACCOUNTS}",
                metric="messages",
                delta=1,
                idempotency_key=f"b{batch}-{j}",
            )
        )
    return usage_pb.ReportUsageRequest(events=events)


async def _pg_backend_pids(admin_url: str, database: str) -> list[int]:
    import asyncpg

    connection = await asyncpg.connect(admin_url)
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1", database
        )
        return [int(r["pid"]) for r in rows]
    finally:
        await connection.close()


async def _pg_commits(admin_url: str, database: str) -> int:
    import asyncpg

    connection = await asyncpg.connect(admin_url)
    try:
        value = await connection.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", database
        )
        return int(value)
    finally:
        await connection.close()


def _cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


async def postgres_ingest(
    replicas: int, seconds: float, *, shared: bool = True
) -> dict[str, object] | None:
    """Usage ingest through `replicas` servers on one database. `shared`: every replica gets
    events of the same 20 accounts, and a batch repeats keys of the batch sent just before it
    (to another replica); otherwise each replica has 20 accounts of its own, as when callers
    are routed by account."""
    from benchmarks.databases import (
        POSTGRES_URL,
        drop_postgres_database,
        fresh_postgres_database,
    )

    name = "entitlements_scaling"
    url = await fresh_postgres_database(name)
    if url is None:
        return None
    admin = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")
    try:
        with contextlib.ExitStack() as stack:
            servers = [
                stack.enter_context(Server(url, cores=str(k % 2), migrate=k == 0))
                for k in range(replicas)
            ]
            counted = {"applied": 0, "duplicate": 0}
            async with _channels([s.target for s in servers], CONNECTIONS // replicas) as chans:
                stubs = [usage_grpc.UsageServiceStub(c) for c in chans]
                per_replica = len(stubs) // replicas

                async def call(i: int) -> object:
                    # batch i to replica i % replicas: a batch's repeats went to another one
                    stub = stubs[(i % replicas) * per_replica + (i // replicas) % per_replica]
                    if shared:
                        batch = _batch(i, i - 1, 0)
                    else:
                        batch = _batch(i, i - replicas, (i % replicas) * ACCOUNTS)
                    answer = await stub.ReportUsage(batch)
                    for r in answer.results:
                        if r.status == usage_pb.USAGE_EVENT_STATUS_APPLIED:
                            counted["applied"] += 1
                        else:
                            counted["duplicate"] += 1
                    return answer

                def server_cpu() -> float:
                    return sum(cpu_seconds(s.pid) for s in servers)

                pg_before = {pid: _cpu_of([pid]) for pid in await _pg_backend_pids(admin, name)}
                commits_before = await _pg_commits(admin, name)
                result = await drive(
                    f"ReportUsage, PostgreSQL, {replicas} replica(s)",
                    servers[0],
                    call,
                    seconds=seconds,
                    items_per_call=100,
                    server_cpu=server_cpu,
                )
                # PostgreSQL's figures cover the warm-up too, as do the events they are divided
                # by; backends born during the run count whole
                pg_cpu = sum(
                    _cpu_of([pid]) - pg_before.get(pid, 0.0)
                    for pid in await _pg_backend_pids(admin, name)
                )
                commits = await _pg_commits(admin, name) - commits_before
                totals = 0
                for k in range(ACCOUNTS * (1 if shared else replicas)):
                    usage = await usage_grpc.UsageServiceStub(chans[0]).GetUsage(
                        usage_pb.GetUsageRequest(account_id=f"ws-{k}")
                    )
                    totals += sum(m.current for m in usage.metrics if m.metric == "messages")
    finally:
        await drop_postgres_database(name)
    events = result.calls * 100
    warm_and_measured_events = counted["applied"] + counted["duplicate"]
    return {
        "replicas": replicas,
        "accounts": "shared" if shared else "own per replica",
        "events_per_second": round(result.items_per_second),
        "replicas_cpu_per_event_us": round(result.cpu_per_call_us / 100, 2),
        "client_cpu_per_event_us": round(result.client_cpu_per_call_us / 100, 2),
        "postgres_backends_cpu_per_event_us": round(pg_cpu / warm_and_measured_events * 1e6, 2),
        "commits_per_second": round(commits / (result.seconds + 1.0)),
        "events_per_commit": round(warm_and_measured_events / max(commits, 1)),
        "measured_events": events,
        "exact": totals == counted["applied"],
        "applied": counted["applied"],
        "counted_total": totals,
    }


def _second_core(one: WorkersFigure, two: WorkersFigure) -> float:
    return 2 * one.result.cpu_per_call_us / two.result.cpu_per_call_us


async def main(seconds: float, postgres: bool) -> dict[str, object]:
    pin_client()
    report: dict[str, object] = {}
    one = await can_use_feature(1, seconds)
    two = await can_use_feature(2, seconds)
    buys = _second_core(one, two)
    for figure in (one, two):
        print(json.dumps(figure.as_dict()), flush=True)
    print(
        f"CanUseFeature: a second core buys {buys:.2f}x (2 workers, a core each, at the CPU per "
        f"call measured with 2 workers: {2e6 / two.result.cpu_per_call_us:,.0f} calls/s, "
        f"against 1 worker's {1e6 / one.result.cpu_per_call_us:,.0f} per core)",
        flush=True,
    )
    report["can_use_feature"] = {
        "one_worker": one.as_dict(),
        "two_workers": two.as_dict(),
        "second_core_buys": round(buys, 2),
    }
    if postgres:
        ingest = []
        for replicas, shared in ((1, True), (2, True), (2, False)):
            measured = await postgres_ingest(replicas, seconds, shared=shared)
            if measured is None:
                print("PostgreSQL: not reachable; skipped")
                break
            print(json.dumps(measured), flush=True)
            ingest.append(measured)
        report["postgres_ingest"] = ingest
    return report


def _run(seconds: float, postgres: bool) -> dict[str, object]:
    import uvloop

    return uvloop.run(main(seconds, postgres))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--json", type=Path, default=Path(".bench/scaling.json"))
    args = parser.parse_args()
    outcome = _run(args.seconds, not args.no_postgres)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(outcome, indent=2))
