"""The sync transport's thread/loop split: cached checks are answered on gRPC's handler threads
without the event loop, and what those threads share with the loop stays consistent."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from nchat.entitlements.v1 import entitlements_service_pb2 as pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as pb_grpc
from nchat.entitlements.v1 import usage_service_pb2 as usage_pb
from nchat.entitlements.v1 import usage_service_pb2_grpc as usage_grpc

from entitlements.cache import EntitlementCache
from entitlements.config import Settings
from entitlements.observability.in_flight import Budgets
from entitlements.policies import default_catalog
from entitlements.server.app import Running, build_deps, create_server
from entitlements.state import AccountEntitlements, derive
from entitlements.store.repository import Store
from tests.server.conftest import CALLERS_TOML, OPS, subscription


def _calls_during_a_blocked_loop(port: int, call: str) -> int:
    """How many sync calls, made from a thread, completed while the test blocked the event loop
    (a call answered through the loop cannot complete before the loop runs again)."""
    done: list[float] = []
    started = threading.Event()
    stop = threading.Event()

    def run() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            ent = pb_grpc.EntitlementsServiceStub(channel)
            usage = usage_grpc.UsageServiceStub(channel)
            started.set()
            while not stop.is_set():
                if call == "CanUseFeature":
                    ent.CanUseFeature(
                        pb.CanUseFeatureRequest(account_id="ws-hot", feature="apiAccess"),
                        metadata=OPS,
                        timeout=10,
                    )
                else:
                    usage.CheckLimit(
                        usage_pb.CheckLimitRequest(account_id="ws-hot", limit="maxMessages"),
                        metadata=OPS,
                        timeout=10,
                    )
                done.append(time.monotonic())

    thread = threading.Thread(target=run)
    thread.start()
    started.wait(5)
    blocked_at = time.monotonic()
    time.sleep(1.0)  # the event loop (this test's) is blocked: nothing bridged could answer
    unblocked_at = time.monotonic()
    stop.set()
    thread.join(10)
    return sum(1 for t in done if blocked_at < t < unblocked_at)


async def test_cached_checks_are_answered_while_the_event_loop_is_blocked(
    lone_server: Running, lone_channel: grpc.aio.Channel
) -> None:
    await lone_server.deps.service.save_subscription(subscription("ws-hot", "starter"))
    ent = pb_grpc.EntitlementsServiceStub(lone_channel)
    usage = usage_grpc.UsageServiceStub(lone_channel)
    first = await ent.CanUseFeature(  # loads the account into the cache (on the loop)
        pb.CanUseFeatureRequest(account_id="ws-hot", feature="apiAccess"), metadata=OPS
    )
    assert first.allowed
    await usage.CheckLimit(  # loads the counter
        usage_pb.CheckLimitRequest(account_id="ws-hot", limit="maxMessages"), metadata=OPS
    )
    for call in ("CanUseFeature", "CheckLimit"):
        assert _calls_during_a_blocked_loop(lone_server.port, call) >= 3, call


async def test_a_miss_waits_for_the_loop_and_is_answered_from_it(
    lone_server: Running, lone_channel: grpc.aio.Channel
) -> None:
    ent = pb_grpc.EntitlementsServiceStub(lone_channel)
    assert lone_server.deps.service.cache.peek("ws-cold") is None
    answer = await ent.CanUseFeature(
        pb.CanUseFeatureRequest(account_id="ws-cold", feature="apiAccess"), metadata=OPS
    )
    assert (answer.allowed, answer.plan_id, answer.upgrade_plan_id) == (False, "free", "starter")
    assert lone_server.deps.service.cache.peek("ws-cold") is not None
    again = await ent.CanUseFeature(
        pb.CanUseFeatureRequest(account_id="ws-cold", feature="apiAccess"), metadata=OPS
    )
    assert again == answer  # the kept (serialized) answer is the same message


def _account(revision: int) -> AccountEntitlements:
    catalog = default_catalog()
    now = datetime.now(UTC)
    ent = derive(catalog, "ws", None, now=now, past_due_grace=timedelta(days=7), as_of=now)
    return AccountEntitlements(
        account_id=f"ws-{revision % 50}",
        revision=revision,
        effective=ent.effective,
        subscription=None,
        status="none",
        grace_period_end=None,
        valid_until=None,
        as_of=now,
    )


def test_cache_reads_from_threads_while_another_thread_writes_never_fail() -> None:
    async def never(account_id: str) -> AccountEntitlements:
        raise AssertionError

    cache = EntitlementCache(never, maxsize=20, ttl_seconds=60)  # evicts all the time
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[int] = []

    def read() -> None:
        try:
            while not stop.is_set():
                for i in range(50):
                    ent = cache.peek(f"ws-{i}")
                    if ent is not None:
                        assert ent.account_id == f"ws-{i}"
                        seen.append(ent.revision)
        except BaseException as exc:  # reported below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    for revision in range(20_000):
        cache.put(_account(revision))
        if revision % 7 == 0:
            cache.invalidate(f"ws-{revision % 50}")
    stop.set()
    for reader in readers:
        reader.join()
    assert not errors, errors[:3]
    assert seen
    assert len(cache) <= 20


def test_budgets_count_exactly_from_many_threads() -> None:
    budgets = Budgets.of(reads=3, writes=1000)
    admitted_at_once: list[int] = []
    lock = threading.Lock()
    inside = 0

    def work() -> None:
        nonlocal inside
        for _ in range(2000):
            if budgets.enter(budgets.reads):
                with lock:
                    inside += 1
                    admitted_at_once.append(inside)
                with lock:
                    inside -= 1
                budgets.leave(budgets.reads)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert budgets.reads.current == 0
    assert max(admitted_at_once) <= 3
    assert len(admitted_at_once) + budgets.reads.shed == 8 * 2000


async def test_the_loop_is_not_needed_for_health(lone_server: Running) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    def check() -> int:
        with grpc.insecure_channel(f"127.0.0.1:{lone_server.port}") as channel:
            return int(
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(), timeout=5)
                .status
            )

    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(check()))
    thread.start()
    time.sleep(0.5)  # noqa: ASYNC251 - blocks the loop on purpose: health answers anyway
    thread.join(5)
    assert result == [health_pb2.HealthCheckResponse.SERVING]
    await asyncio.sleep(0)


class _Seen(grpc.ServerInterceptor):
    def __init__(self) -> None:
        self.methods: list[str] = []

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        self.methods.append(handler_call_details.method)
        return continuation(handler_call_details)


async def test_interceptors_handed_to_create_server_see_every_call(
    tmp_path: Path, sqlite_store: Store
) -> None:
    """The hook for server-wide concerns (tracing): grpc's sync interceptors, hot path included."""
    callers = tmp_path / "callers.toml"
    callers.write_text(CALLERS_TOML)
    settings = Settings.from_env({"ENTITLEMENTS_CALLERS_FILE": str(callers)})
    seen = _Seen()
    running = await create_server(
        settings, build_deps(settings, sqlite_store), addr="127.0.0.1:0", interceptors=[seen]
    )
    await running.server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.EntitlementsServiceStub(channel)
            for _ in range(2):  # a miss (the loop), then the hot path (the thread)
                await stub.CanUseFeature(
                    pb.CanUseFeatureRequest(account_id="ws-i", feature="apiAccess"), metadata=OPS
                )
    finally:
        await running.stop(0)
    assert seen.methods == ["/nchat.entitlements.v1.EntitlementsService/CanUseFeature"] * 2
