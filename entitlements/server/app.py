"""Builds the gRPC server (services, health, reflection, auth) and runs it until SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection
from nchat.entitlements.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    billing_service_pb2,
    billing_service_pb2_grpc,
    crypto_payment_service_pb2,
    crypto_payment_service_pb2_grpc,
    entitlements_service_pb2,
    token_gate_service_pb2,
    token_gate_service_pb2_grpc,
    usage_service_pb2,
    usage_service_pb2_grpc,
)

from adapters.chains.heads import HeadFollowers
from entitlements.admin.audit import AuditLog
from entitlements.admin.audit_section import audit_section
from entitlements.coherence import ChangeFeed
from entitlements.config import Settings
from entitlements.observability.in_flight import Budgets
from entitlements.observability.tracing import server_interceptors
from entitlements.policies import Catalog, default_catalog
from entitlements.server.admin_servicer import install_admin
from entitlements.server.auth import Authenticator
from entitlements.server.billing_setup import install_billing, webhook_server
from entitlements.server.bridge import LoopBridge
from entitlements.server.crypto_setup import install_crypto
from entitlements.server.deps import Deps
from entitlements.server.entitlements_servicer import EntitlementsServicer
from entitlements.server.events_setup import install_events
from entitlements.server.hot_path import HotPath
from entitlements.server.ops_setup import install_observability
from entitlements.server.reflection import enable_reflection
from entitlements.server.schema import check_schema
from entitlements.server.token_gate_setup import install_token_gate
from entitlements.server.transport import Handlers, Streams, SyncServer
from entitlements.server.unimplemented import NOT_BUILT, unimplemented_servicer
from entitlements.server.usage_servicer import UsageServicer
from entitlements.service import EntitlementService
from entitlements.store.audit_repository import AuditStore
from entitlements.store.repository import Store
from entitlements.store.usage_repository import UsageRepository
from entitlements.usage.ledger import UsageLedger
from entitlements.watch import WatchHub

log = logging.getLogger(__name__)

_OTHER_SERVICES = (
    (usage_service_pb2, usage_service_pb2_grpc, "UsageService"),
    (token_gate_service_pb2, token_gate_service_pb2_grpc, "TokenGateService"),
    (billing_service_pb2, billing_service_pb2_grpc, "BillingService"),
    (crypto_payment_service_pb2, crypto_payment_service_pb2_grpc, "CryptoPaymentService"),
    (admin_service_pb2, admin_service_pb2_grpc, "AdminService"),
)


def build_deps(settings: Settings, store: Store, catalog: Catalog | None = None) -> Deps:
    """Everything the server is built from, on `store`; tests hand in their own store."""
    catalog = catalog or default_catalog()
    store.past_due_grace = settings.past_due_grace  # as subscription.past_due events report it
    hub = WatchHub()
    service = EntitlementService(
        store,
        catalog,
        hub,
        past_due_grace=settings.past_due_grace,
        cache_size=settings.cache_size,
        cache_ttl_seconds=settings.cache_ttl_seconds,
        min_revision_wait_seconds=settings.min_revision_wait_seconds,
    )
    deps = Deps(store=store, catalog=catalog, hub=hub, service=service)
    usage_repository = UsageRepository(store.engine)
    ledger = UsageLedger(
        usage_repository,
        hub,
        counter_ttl_seconds=settings.usage_counter_ttl_seconds,
        key_retention_seconds=settings.usage_key_retention_seconds,
    )
    deps.ledger = ledger
    deps.feed = ChangeFeed(
        service,
        usage=usage_repository,
        interval_seconds=settings.change_feed_interval_seconds,
        listen=settings.change_feed_listen,
    )
    deps.closers.append(deps.feed.close)
    deps.in_flight = Budgets.of(
        reads=settings.max_in_flight_reads, writes=settings.max_in_flight_writes
    )
    deps.servicers["UsageService"] = UsageServicer(ledger, service, catalog)
    deps.closers.append(ledger.close)
    deps.billing = install_billing(settings, deps)
    deps.heads = HeadFollowers.from_settings(settings.chains)
    deps.closers.append(deps.heads.close)
    deps.token_gate = install_token_gate(settings, deps, heads=deps.heads)
    deps.crypto = install_crypto(settings, deps)
    deps.admin = install_admin(settings, deps)
    deps.events = install_events(settings, deps)
    deps.ops = install_observability(settings, deps, admin=deps.admin)
    deps.ops.sections.append(deps.events.admin_section)
    deps.ops.sections.append(audit_section(AuditLog(AuditStore(store.engine))))
    return deps


@dataclass
class Running:
    server: SyncServer
    port: int
    health: health.HealthServicer
    deps: Deps
    #: The open WatchEntitlements streams (each on a thread of the stream pool).
    streams: Streams

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, status)

    async def drain(self, grace: float) -> None:
        """Health says NOT_SERVING, watch streams end and new unary calls get UNAVAILABLE while
        the ones in flight finish; returns once none is in flight and calls have stopped
        arriving, or after `grace` seconds."""
        deadline = asyncio.get_running_loop().time() + grace
        self.health.enter_graceful_shutdown()
        self.deps.in_flight.closing = True
        self.deps.hub.close()
        await _drain(self.deps.in_flight, deadline)

    async def stop(self, grace: float) -> None:
        """Drain (at most `grace` seconds), stop the server, close the dependencies."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        await self.drain(grace)
        await self.server.stop(max(deadline - loop.time(), 0.0))
        await self.deps.close()


#: A drained server stops once no call has arrived for this long (at most `_QUIET_MAX_SECONDS`
#: after the last call in flight finished): gRPC's core answers CANCELLED to the calls it has
#: received but not yet handed to the server when the server stops.
_QUIET_SECONDS = 0.05
_QUIET_MAX_SECONDS = 1.0


async def _drain(budgets: Budgets, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    seen, quiet_since, idle_since = budgets.refused_closing, loop.time(), loop.time()
    while loop.time() < deadline:
        now = loop.time()
        if budgets.current:
            idle_since = now
        if budgets.current or budgets.refused_closing != seen:
            seen, quiet_since = budgets.refused_closing, now
        elif now - quiet_since >= _QUIET_SECONDS:
            return
        if now - idle_since >= _QUIET_MAX_SECONDS:
            return
        await asyncio.sleep(0.005)


SERVICE_NAMES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in (
        (entitlements_service_pb2, "EntitlementsService"),
        *((m, n) for m, _, n in _OTHER_SERVICES),
    )
)


#: Stream-pool threads beyond `max_watchers`: a stream past the limit still needs a thread to be
#: refused on (briefly), and health watches share the pool.
_STREAM_HEADROOM = 64


async def create_server(
    settings: Settings,
    deps: Deps,
    *,
    addr: str | None = None,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
) -> Running:
    """A started-ready (not yet started) server bound to ``addr`` (port 0 picks a free one).

    The running event loop is the one that owns `deps`: calls the handler threads cannot answer
    from memory are run on it (see entitlements.server.transport). `interceptors` are grpc's
    sync server interceptors (tracing, say): each costs every call, the hot path included."""
    if settings.dev_mode:
        log.warning(
            "DEV MODE: authentication is OFF; every caller has every scope and /admin is open. "
            "Listening on gRPC on %s and HTTP on %s (dev mode defaults to loopback, 127.0.0.1; "
            "ENTITLEMENTS_GRPC_ADDR / ENTITLEMENTS_HTTP_ADDR choose otherwise). Never run this "
            "in production (unset ENTITLEMENTS_DEV_MODE, set ENTITLEMENTS_CALLERS_FILE).",
            addr if addr is not None else settings.grpc_addr,
            settings.http_addr,
        )
    unary_pool = ThreadPoolExecutor(settings.grpc_threads, thread_name_prefix="grpc")
    stream_pool = ThreadPoolExecutor(
        settings.max_watchers + _STREAM_HEADROOM, thread_name_prefix="grpc-stream"
    )
    streams = Streams(settings.max_watchers)
    handlers = Handlers(
        bridge=LoopBridge(asyncio.get_running_loop()),
        budgets=deps.in_flight,
        auth=None if settings.dev_mode else Authenticator(settings.callers),
        streams=streams,
        stream_pool=stream_pool,
    )
    entitlements_servicer = EntitlementsServicer(
        deps.service, deps.catalog, max_watchers=settings.max_watchers
    )
    entitlements_servicer.in_flight = deps.in_flight
    servicers: list[tuple[Any, str, object]] = [
        (entitlements_service_pb2, "EntitlementsService", entitlements_servicer)
    ]
    for pb2, pb2_grpc, name in _OTHER_SERVICES:
        servicer = deps.servicers.get(name)
        if servicer is None:
            descriptor = pb2.DESCRIPTOR.services_by_name[name]
            base = getattr(pb2_grpc, f"{name}Servicer")
            why = deps.disabled.get(name, NOT_BUILT)
            servicer = unimplemented_servicer(descriptor, base, why)
        else:
            servicer.in_flight = deps.in_flight  # type: ignore[attr-defined]
        servicers.append((pb2, name, servicer))
    gate = deps.token_gate.gate if deps.token_gate is not None else None
    fast = HotPath(deps.service, deps.catalog, deps.ledger, gate).methods()
    methods = {
        pb2.DESCRIPTOR.services_by_name[name].full_name: handlers.service(
            pb2.DESCRIPTOR.services_by_name[name], servicer, fast
        )
        for pb2, name, servicer in servicers
    }
    # The sync health servicer, in blocking mode: a Watch holds a stream-pool thread.
    health_servicer = health.HealthServicer(experimental_non_blocking=False)
    methods[health.SERVICE_NAME] = handlers.health(health_servicer)
    server = SyncServer(
        grpc.server(
            unary_pool,
            # Tracing first (none when off): every call gets a span, refusals included.
            interceptors=[*server_interceptors(), *interceptors],
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                # One process owns the port, and a second server on it fails instead of
                # silently sharing calls; with --workers N the workers share it on purpose.
                ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ],
        ),
        (unary_pool, stream_pool),
        methods,
    )
    enable_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server.grpc)
    bind = addr if addr is not None else settings.grpc_addr
    try:
        port = server.add_insecure_port(bind)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {bind}: {exc}") from exc
    if deps.ledger is not None:
        deps.ledger.start()
    if deps.feed is not None:
        deps.feed.start()
    if deps.events is not None:
        deps.events.start()
    running = Running(server=server, port=port, health=health_servicer, deps=deps, streams=streams)
    await running.set_serving(False)
    return running


async def serve(settings: Settings) -> None:
    """Run the service until SIGTERM or SIGINT, drain gracefully, then end the process (exit 0)."""
    await check_schema(settings.database_url)
    store = Store.open(settings.database_url)
    try:
        deps = build_deps(settings, store)
        if deps.token_gate is not None:
            await deps.token_gate.start()  # refuses a chain node of the wrong chain id
        if deps.crypto is not None:
            await deps.crypto.start()  # the chain watchers; stopped by deps.close()
        running = await create_server(settings, deps)
        await running.server.start()
        http = webhook_server(settings, deps.billing, ops=deps.ops)
        await http.start()
        await store.ping()
        warmed = await deps.service.warm(
            await store.recently_changed_accounts(settings.warm_accounts)
        )
        await running.set_serving(True)
        # What start-up built (every module, the catalog, the warmed cache) stays: out of the
        # collector's generations, the collections the calls' garbage triggers skip it.
        gc.collect()
        gc.freeze()
        log.info(
            "serving gRPC on %s (port %d, pid %d), database %s, %d accounts warmed",
            settings.grpc_addr,
            running.port,
            os.getpid(),
            _redacted(settings.database_url),
            warmed,
        )
        log.info(
            "serving HTTP (/webhooks/stripe, /healthz, /readyz, /metrics, /admin) on %s",
            settings.http_addr,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info(
            "shutting down: finishing in-flight calls (grace %.1fs)",
            settings.shutdown_grace_seconds,
        )
        await running.drain(settings.shutdown_grace_seconds)
        await http.stop()
        await running.deps.close()
    finally:
        await store.close()
    log.info("stopped")
    _exit_keeping_calls_retryable()


def _exit_keeping_calls_retryable() -> NoReturn:
    """End the process with the gRPC server still answering UNAVAILABLE.

    Neither `server.stop()` nor the event loop's end may come first: the first answers CANCELLED
    to the calls gRPC's core has received but not yet handed over, the second cancels the
    handlers of calls being answered (CANCELLED too). Exiting here closes those calls'
    connections instead, which their callers see as UNAVAILABLE and retry. Everything worth
    keeping (the store, acknowledged writes, the logs) is closed or flushed by now.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{host}" if ":" in creds else url
    return url
