"""Transport prototypes for the hot path (issue 15, goal 1): which server design answers a cached
`CanUseFeature` / `CheckLimit` closest to a trivial sync-grpc `Health/Check`?

Not the service: each design is a small server built from the service's own parts (`Deps`, the
entitlement cache, the usage ledger, the servicers' answer builders), started as its own process
pinned to core 0 and driven like `make bench` drives the service. Designs (`--design`):

- `sync-bridge`: `grpc.server` with 16 threads; unary handlers validate and answer from the
  in-memory cache on the calling thread, and hand misses to the asyncio loop that owns the
  database (a loop thread; `asyncio.run_coroutine_threadsafe`). The issue's suggestion.
- `sync-bridge-raw`: the same, with responses kept serialized (`CanUseFeature` per account,
  feature and revision; `CheckLimit` per account, limit, revision and counter value) and
  handlers registered without a response serializer (bytes out).
- `sync-bridge-frozen`: `sync-bridge-raw` after `gc.freeze()` once started: the objects of
  start-up (every imported module's) leave the collector's generations, so the collections the
  calls' allocations trigger no longer walk them.
- `aio-generic`: `grpc.aio.server` on uvloop with a generic handler per RPC (no servicer class,
  no `@unary` wrapper) and serialized responses kept as in `sync-bridge-raw`.

Every design counts its calls into the service's RPC metrics and keeps an in-flight count, as the
service's `@unary` wrapper does, so the figures include that bookkeeping; none runs the auth
interceptor (the benchmarked service runs in dev mode, without it, too).

`python -m benchmarks.transport_probe` measures every design beside both reference servers and
today's service, in one run; `--port` serves one design (what the measuring run starts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from time import perf_counter
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as ent_grpc
from nchat.entitlements.v1 import usage_service_pb2 as usage_pb
from nchat.entitlements.v1 import usage_service_pb2_grpc as usage_grpc

from benchmarks.harness import PIN, Result, ScriptServer, Server, drive, pin_client
from benchmarks.reference import SYNC_THREADS
from entitlements.config import Settings
from entitlements.errors import EntitlementsError
from entitlements.observability.metrics import rpc_metrics_for
from entitlements.policies import check_limit
from entitlements.server.app import build_deps
from entitlements.server.deps import Deps
from entitlements.server.entitlements_servicer import _answer
from entitlements.server.status import error_status
from entitlements.server.validation import require_id
from entitlements.state import AccountEntitlements
from entitlements.store.migrate import upgrade
from entitlements.store.repository import Store
from entitlements.usage.periods import current_period

T = TypeVar("T")
_ENT = "nchat.entitlements.v1.EntitlementsService"
_USAGE = "nchat.entitlements.v1.UsageService"
DESIGNS = ("sync-bridge", "sync-bridge-raw", "sync-bridge-frozen", "aio-generic")


class Core:
    """The service's parts, owned by one asyncio loop, and the hot path's answers from memory.

    `answer_*` run on any thread: they read the entitlement cache and the ledger's counters
    without awaiting and return None when the answer needs the loop (a miss); `load_*` are the
    coroutines the loop runs then.
    """

    def __init__(self, deps: Deps) -> None:
        assert deps.ledger is not None
        self.deps = deps
        self.cache = deps.service.cache
        self.catalog = deps.catalog
        self.ledger = deps.ledger
        self.raw: dict[tuple[str, str], tuple[int, bytes]] = {}
        self.raw_limits: dict[tuple[str, str], tuple[int, int, bytes]] = {}
        self.in_flight = 0
        self.can_use_metrics = rpc_metrics_for("EntitlementsService", "CanUseFeature")
        self.limit_metrics = rpc_metrics_for("UsageService", "CheckLimit")

    def peek(self, account_id: str) -> AccountEntitlements | None:
        try:
            return self.cache.peek(account_id)
        except KeyError:  # evicted by the loop thread between the LRU's check and its read
            return None

    def feature_response(
        self, request: ent_pb.CanUseFeatureRequest, ent: AccountEntitlements
    ) -> ent_pb.CanUseFeatureResponse:
        feature = request.feature
        return _answer(feature, ent.effective.can_use(feature), ent.revision)

    def feature_bytes(
        self, request: ent_pb.CanUseFeatureRequest, ent: AccountEntitlements
    ) -> bytes:
        key = (request.account_id, request.feature)
        kept = self.raw.get(key)
        if kept is not None and kept[0] == ent.revision:
            return kept[1]
        data = self.feature_response(request, ent).SerializeToString()
        self.raw[key] = (ent.revision, data)
        return data

    def validate_feature(self, request: ent_pb.CanUseFeatureRequest) -> str:
        account_id = require_id(request.account_id, "account_id")
        self.catalog.feature(request.feature, field="feature")
        return account_id

    async def load(self, account_id: str) -> AccountEntitlements:
        return await self.deps.service.get(account_id)

    def limit_bytes(
        self, request: usage_pb.CheckLimitRequest, ent: AccountEntitlements, current: int
    ) -> bytes:
        """Kept per (account, limit) while the revision and the counter stay the same."""
        key = (request.account_id, request.limit)
        kept = self.raw_limits.get(key)
        if kept is not None and kept[0] == ent.revision and kept[1] == current:
            return kept[2]
        data = self.limit_response(request, ent, current).SerializeToString()
        self.raw_limits[key] = (ent.revision, current, data)
        return data

    def limit_response(
        self, request: usage_pb.CheckLimitRequest, ent: AccountEntitlements, current: int
    ) -> usage_pb.CheckLimitResponse:
        info = self.catalog.limit(request.limit, field="limit")
        result = check_limit(ent.effective.limits[info.key], current)
        return usage_pb.CheckLimitResponse(
            allowed=result.allowed,
            limit=result.limit or 0,
            current=result.current,
            percentage=result.percentage,
            level=result.level,  # type: ignore[arg-type]
            unlimited=result.unlimited,
            remaining=result.remaining or 0,
            plan_id=ent.plan_id,
            revision=ent.revision,
        )

    def counter_key(self, request: usage_pb.CheckLimitRequest) -> tuple[str, str, str]:
        info = self.catalog.limit(request.limit, field="limit")
        assert info.metric is not None, "the probe checks tracked limits only"
        period = current_period(self.deps.service.now()) if info.monthly else ""
        return (request.account_id, info.metric, period)

    def peek_counter(self, key: tuple[str, str, str]) -> int | None:
        """The ledger's in-memory counter while fresh (a prototype reads its private LRU; the
        real change adds a thread-safe `UsageLedger.peek`)."""
        try:
            cached = self.ledger._counters.get(key)
        except KeyError:
            return None
        if cached is None or time.monotonic() >= cached[1]:
            return None
        return cached[0]


async def build_core(database_url: str) -> Core:
    await upgrade(database_url)
    store = Store.open(database_url)
    settings = Settings(dev_mode=True)
    deps = build_deps(settings, store)
    assert deps.ledger is not None and deps.feed is not None
    deps.ledger.start()
    deps.feed.start()
    return Core(deps)


# --- sync-bridge ------------------------------------------------------------------------------


class LoopThread:
    """An asyncio loop (uvloop) in its own thread, owning the database and the service's tasks."""

    def __init__(self) -> None:
        import uvloop

        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


def _abort(context: grpc.ServicerContext, exc: EntitlementsError) -> None:
    context.abort_with_status(rpc_status.to_status(error_status(exc)))


_serialize_feature = ent_pb.CanUseFeatureResponse.SerializeToString
_serialize_limit = usage_pb.CheckLimitResponse.SerializeToString


def sync_handlers(core: Core, bridge: LoopThread, raw: bool) -> list[grpc.GenericRpcHandler]:
    def can_use_feature(request: ent_pb.CanUseFeatureRequest, context: grpc.ServicerContext) -> Any:
        start = perf_counter()
        core.in_flight += 1
        code = "OK"
        try:
            account_id = core.validate_feature(request)
            ent = core.peek(account_id) or bridge.run(core.load(account_id))
            if raw:
                return core.feature_bytes(request, ent)
            return core.feature_response(request, ent)
        except EntitlementsError as exc:
            code = "INVALID_ARGUMENT"
            _abort(context, exc)
        finally:
            core.in_flight -= 1
            core.can_use_metrics.observe(code, perf_counter() - start)

    def check_limit_(request: usage_pb.CheckLimitRequest, context: grpc.ServicerContext) -> Any:
        start = perf_counter()
        core.in_flight += 1
        code = "OK"
        try:
            account_id = require_id(request.account_id, "account_id")
            key = core.counter_key(request)
            ent = core.peek(account_id) or bridge.run(core.load(account_id))
            current = core.peek_counter(key)
            if current is None:
                current = bridge.run(core.ledger.current(key))
            if raw:
                return core.limit_bytes(request, ent, current)
            return core.limit_response(request, ent, current)
        except EntitlementsError as exc:
            code = "INVALID_ARGUMENT"
            _abort(context, exc)
            raise AssertionError from exc  # abort raises
        finally:
            core.in_flight -= 1
            core.limit_metrics.observe(code, perf_counter() - start)

    return [
        grpc.method_handlers_generic_handler(
            _ENT,
            {
                "CanUseFeature": grpc.unary_unary_rpc_method_handler(
                    can_use_feature,
                    request_deserializer=ent_pb.CanUseFeatureRequest.FromString,
                    response_serializer=None if raw else _serialize_feature,
                )
            },
        ),
        grpc.method_handlers_generic_handler(
            _USAGE,
            {
                "CheckLimit": grpc.unary_unary_rpc_method_handler(
                    check_limit_,
                    request_deserializer=usage_pb.CheckLimitRequest.FromString,
                    response_serializer=None if raw else _serialize_limit,
                )
            },
        ),
    ]


def serve_sync_bridge(port: int, database_url: str, raw: bool, freeze: bool = False) -> None:
    bridge = LoopThread()
    core = bridge.run(build_core(database_url))
    if freeze:
        gc.collect()
        gc.freeze()
    server = grpc.server(
        ThreadPoolExecutor(max_workers=SYNC_THREADS), handlers=sync_handlers(core, bridge, raw)
    )
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(0)
    bridge.run(core.deps.close())


# --- aio-generic ------------------------------------------------------------------------------


async def serve_aio_generic(port: int, database_url: str) -> None:
    core = await build_core(database_url)

    async def can_use_feature(
        request: ent_pb.CanUseFeatureRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        start = perf_counter()
        core.in_flight += 1
        code = "OK"
        try:
            account_id = core.validate_feature(request)
            ent = core.peek(account_id) or await core.load(account_id)
            return core.feature_bytes(request, ent)
        except EntitlementsError as exc:
            code = "INVALID_ARGUMENT"
            status = rpc_status.to_status(error_status(exc))
            await context.abort(status.code, status.details, status.trailing_metadata)
            raise
        finally:
            core.in_flight -= 1
            core.can_use_metrics.observe(code, perf_counter() - start)

    async def check_limit_(
        request: usage_pb.CheckLimitRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        start = perf_counter()
        core.in_flight += 1
        try:
            account_id = require_id(request.account_id, "account_id")
            key = core.counter_key(request)
            ent = core.peek(account_id) or await core.load(account_id)
            current = core.peek_counter(key)
            if current is None:
                current = await core.ledger.current(key)
            return core.limit_bytes(request, ent, current)
        finally:
            core.in_flight -= 1
            core.limit_metrics.observe("OK", perf_counter() - start)

    server = grpc.aio.server(
        handlers=[
            grpc.method_handlers_generic_handler(
                _ENT,
                {
                    "CanUseFeature": grpc.unary_unary_rpc_method_handler(
                        can_use_feature,
                        request_deserializer=ent_pb.CanUseFeatureRequest.FromString,
                        response_serializer=None,
                    )
                },
            ),
            grpc.method_handlers_generic_handler(
                _USAGE,
                {
                    "CheckLimit": grpc.unary_unary_rpc_method_handler(
                        check_limit_,
                        request_deserializer=usage_pb.CheckLimitRequest.FromString,
                        response_serializer=None,
                    )
                },
            ),
        ]
    )
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)
    await core.deps.close()


# --- measuring --------------------------------------------------------------------------------


def _calls(channel: grpc.aio.Channel) -> dict[str, Callable[[int], Awaitable[object]]]:
    health_stub = health_pb2_grpc.HealthStub(channel)
    ent = ent_grpc.EntitlementsServiceStub(channel)
    usage = usage_grpc.UsageServiceStub(channel)
    check = health_pb2.HealthCheckRequest()
    can_use = ent_pb.CanUseFeatureRequest(account_id="ws-1", feature="customBranding")
    limit = usage_pb.CheckLimitRequest(account_id="ws-1", limit="maxMessages")
    return {
        "Health/Check": lambda i: health_stub.Check(check),
        "CanUseFeature": lambda i: ent.CanUseFeature(can_use),
        "CheckLimit": lambda i: usage.CheckLimit(limit),
    }


async def main(seconds: float, rounds: int) -> dict[str, Any]:
    """Every server started at once (idle while another is driven), then `rounds` rounds over
    every (server, RPC), each figure the median and the least of its rounds: the load of other
    processes on this machine drifts over minutes, and interleaving spreads it over every
    figure alike."""
    pin_client()
    hot = ("Health/Check", "CanUseFeature", "CheckLimit")
    samples: dict[tuple[str, str], list[Result]] = {}
    with contextlib.ExitStack() as stack:
        servers: dict[str, tuple[Server | ScriptServer, tuple[str, ...]]] = {}
        for transport in ("sync", "aio"):
            ref = ScriptServer("benchmarks.reference", "--transport", transport)
            servers[f"reference {transport} health"] = (stack.enter_context(ref), hot[:1])
        servers["service today (grpc.aio)"] = (stack.enter_context(Server()), hot)
        for design in DESIGNS:
            workdir = Path(tempfile.mkdtemp(prefix="transport-probe-"))
            stack.callback(shutil.rmtree, workdir, True)
            url = f"sqlite+aiosqlite:///{workdir / 'probe.db'}"
            probe = ScriptServer(
                "benchmarks.transport_probe", "--design", design, "--database", url
            )
            servers[design] = (stack.enter_context(probe), hot)
        channels = {
            label: stack.enter_context(_Channel(server.target))
            for label, (server, _) in servers.items()
        }
        for label, (_, names) in servers.items():  # the first calls load the account and counter
            calls = _calls(channels[label])
            for name in names[1:]:
                await calls[name](0)
        for round_ in range(rounds):
            for label, (server, names) in servers.items():
                calls = _calls(channels[label])
                for name in names:
                    result = await drive(
                        f"{label}: {name}",
                        server,
                        calls[name],
                        seconds=seconds,
                        warmup=1.0 if round_ == 0 else 0.3,
                    )
                    samples.setdefault((label, name), []).append(result)
    figures = {key: _median(results) for key, results in samples.items()}
    sync_floor = figures[("reference sync health", "Health/Check")]
    aio_floor = figures[("reference aio health", "Health/Check")]
    # Other processes only ever add CPU per call: the least of the rounds is the figure least
    # disturbed, and on a busy machine the steadier ratio.
    least = {key: min(r.cpu_per_call_us for r in results) for key, results in samples.items()}
    sync_least = least[("reference sync health", "Health/Check")]
    print(
        f"server pinned to core 0 (pinned: {PIN}), client core 1; {rounds} rounds of"
        f" {seconds:.0f} s per figure; ratios of server CPU per call (the least of the rounds"
        " to the reference's least, and medians)"
    )
    rows = []
    for (design, name), r in figures.items():
        spread = [x.cpu_per_call_us for x in samples[(design, name)]]
        row = {
            "design": design,
            "rpc": name,
            "calls_per_second": round(r.calls_per_second),
            "server_cpu_per_call_us": round(r.cpu_per_call_us, 1),
            "cpu_per_call_us_rounds": [round(x, 1) for x in spread],
            "cpu_vs_sync_health": round(r.cpu_per_call_us / sync_floor.cpu_per_call_us, 3),
            "least_cpu_per_call_us": round(least[(design, name)], 1),
            "least_cpu_vs_sync_health": round(least[(design, name)] / sync_least, 3),
            "cpu_vs_aio_health": round(r.cpu_per_call_us / aio_floor.cpu_per_call_us, 3),
            "calls_vs_sync_health": round(r.calls_per_second / sync_floor.calls_per_second, 3),
        }
        rows.append(row)
        print(
            f"{design:<26} {name:<14} {row['calls_per_second']:>7,} calls/s"
            f" {row['server_cpu_per_call_us']:>7.1f} us CPU/call"
            f" ({min(spread):.0f}-{max(spread):.0f})"
            f" | least {row['least_cpu_vs_sync_health']:.2f}x, median"
            f" {row['cpu_vs_sync_health']:.2f}x sync health,"
            f" {row['cpu_vs_aio_health']:.2f}x aio health (CPU/call);"
            f" {row['calls_vs_sync_health']:.2f}x sync health calls/s",
            flush=True,
        )
    return {"seconds": seconds, "rounds": rounds, "rows": rows}


def _median(results: list[Result]) -> Result:
    cpu = statistics.median(r.cpu_per_call_us for r in results)
    return min(results, key=lambda r: abs(r.cpu_per_call_us - cpu))


class _Channel:
    def __init__(self, target: str) -> None:
        self.channel = grpc.aio.insecure_channel(target)

    def __enter__(self) -> grpc.aio.Channel:
        return self.channel

    def __exit__(self, *exc: object) -> None:
        pass  # closed with the loop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transport_probe")
    parser.add_argument("--port", type=int, help="serve one design on this port")
    parser.add_argument("--design", choices=DESIGNS, default="sync-bridge")
    parser.add_argument("--database", help="sqlite+aiosqlite:///... (serving only)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path(".bench/transport_probe.json"))
    args = parser.parse_args()
    if args.port is not None:
        os.environ.setdefault("ENTITLEMENTS_LOG_LEVEL", "WARNING")
        if args.design == "aio-generic":
            import uvloop

            uvloop.run(serve_aio_generic(args.port, args.database))
        else:
            serve_sync_bridge(
                args.port,
                args.database,
                raw=args.design != "sync-bridge",
                freeze=args.design == "sync-bridge-frozen",
            )
    else:
        import uvloop

        outcome = uvloop.run(main(args.seconds, args.rounds))
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(outcome, indent=2))
