"""The gRPC transport: grpc's sync server, with every method's handler built here.

Why not grpc.aio: a cached check costs what the transport costs, and grpc.aio's per-call cost is
about 1.7x the sync server's (BENCHMARKS.md, issue 15). So calls arrive on the sync server's
threads and:

- the hot checks (`hot_path.HotPath`) are answered on the calling thread from memory, as kept
  serialized bytes (handlers are registered without serializers: bytes in, bytes out);
- everything else (misses, writes, every other RPC) runs the asyncio servicers' methods on the
  event loop that owns the database, through `bridge.LoopBridge`, the thread waiting;
- `WatchEntitlements` streams take a thread each from a pool of their own (`max_watchers`
  threads, created as streams open), so open streams never starve the unary calls.

Each handler does, in order: authentication (the caller's scope, before the request's bytes are
decoded), safe decoding (`guard.RequestGuard`), then the answer. No interceptors: each would cost
every call another Python hop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health, health_pb2
from grpc_status import rpc_status

from entitlements.observability.in_flight import Budgets
from entitlements.observability.metrics import rpc_metrics_for_path
from entitlements.server.auth import METHOD_SCOPES, Authenticator
from entitlements.server.bridge import LoopBridge, StreamMethod, UnaryMethod
from entitlements.server.guard import RequestGuard
from entitlements.server.hot_path import Fast
from entitlements.server.status import READ_METHODS, status_proto

__all__ = ["Handlers", "Streams", "SyncServer"]

log = logging.getLogger(__name__)

#: A native (sync) behaviour: the health service's, called with the decoded request.
Native = Callable[[Any, grpc.ServicerContext], Message]


class Streams:
    """Open server streams, against a limit, from any thread."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0
        self._lock = threading.Lock()
        self.refusal = rpc_status.to_status(
            status_proto(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"more than {limit} watch streams are open; retry with backoff",
                reason="ERROR_REASON_OVERLOADED",
                metadata={"max_watchers": str(limit)},
            )
        )

    def enter(self) -> bool:
        with self._lock:
            if self.open >= self.limit:
                self.refused += 1
                return False
            self.open += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.open -= 1


class Handlers:
    """Builds the method handlers of one server."""

    def __init__(
        self,
        *,
        bridge: LoopBridge,
        budgets: Budgets,
        auth: Authenticator | None,
        streams: Streams,
        stream_pool: ThreadPoolExecutor,
        guard: RequestGuard | None = None,
    ) -> None:
        self._bridge = bridge
        self._budgets = budgets
        self._auth = auth
        self._streams = streams
        self._stream_pool = stream_pool
        self._guard = guard or RequestGuard()

    def _authorize(self, path: str) -> Callable[[grpc.ServicerContext], None]:
        """Refuses a caller without the method's scope (never decoding its request)."""
        scope = METHOD_SCOPES.get(path)
        auth = self._auth
        metrics = rpc_metrics_for_path(path)
        if scope is None or auth is None:
            return _nobody
        refusal_for = auth.refusal

        def authorize(context: grpc.ServicerContext) -> None:
            refused = refusal_for(scope, context.invocation_metadata())
            if refused is not None:
                metrics.observe(refused.code.name, 0.0)
                context.abort_with_status(refused)

        return authorize

    def service(
        self, service: ServiceDescriptor, servicer: object, fast: Mapping[str, Fast]
    ) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        """The handlers of every method of `service`: the asyncio `servicer`'s methods on the
        loop, with the fast answers of `fast` (by "Service/Method") on the calling thread."""
        table: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            parse = GetMessageClass(method.input_type).FromString
            on_loop = getattr(servicer, method.name)
            if method.server_streaming:
                table[method.name] = self.stream(path, parse, slow=on_loop)
            else:
                answer = fast.get(f"{service.name}/{method.name}")
                table[method.name] = self.unary(path, parse, slow=on_loop, fast=answer)
        return table

    def health(self, servicer: health.HealthServicer) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        """The standard health service, answered on the calling thread (`servicer` in blocking
        mode: a Watch holds a stream-pool thread)."""
        parse = health_pb2.HealthCheckRequest.FromString
        return {
            "Check": self.unary(f"/{health.SERVICE_NAME}/Check", parse, native=servicer.Check),
            "Watch": self.stream(f"/{health.SERVICE_NAME}/Watch", parse, native=servicer.Watch),
        }

    def unary(
        self,
        path: str,
        parse: Callable[[bytes], Any],
        *,
        slow: UnaryMethod | None = None,
        fast: Fast | None = None,
        native: Native | None = None,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """A unary method: `fast` on the calling thread when it answers, else `slow` (an
        asyncio servicer method) on the loop; or `native`, a sync behaviour."""
        authorize = self._authorize(path)
        decode = self._guard.decoder(path, parse)
        metrics = rpc_metrics_for_path(path)
        budgets = self._budgets
        budget = budgets.reads if metrics.method in READ_METHODS else budgets.writes
        bridge = self._bridge

        if native is not None:
            call_native = native

            def native_behaviour(raw: bytes, context: grpc.ServicerContext) -> bytes:
                authorize(context)
                return call_native(decode(raw, context), context).SerializeToString()

            return grpc.unary_unary_rpc_method_handler(native_behaviour)
        assert slow is not None
        on_loop = slow

        def behaviour(raw: bytes, context: grpc.ServicerContext) -> bytes | None:
            authorize(context)
            request = decode(raw, context)
            if fast is not None and not budgets.closing:
                start = perf_counter()
                # A full budget is no refusal here: the loop's `@unary` sheds the call.
                if budgets.try_enter(budget):
                    try:
                        answer = fast(request, raw)
                    except Exception:  # a bug here must not fail what the loop can answer
                        log.exception("the hot path of %s failed; answering from the loop", path)
                        answer = None
                    finally:
                        budgets.leave(budget)
                    if answer is not None:
                        metrics.observe("OK", perf_counter() - start)
                        return answer
            response = bridge.unary(on_loop, request, context)
            return None if response is None else response.SerializeToString()

        return grpc.unary_unary_rpc_method_handler(behaviour)

    def stream(
        self,
        path: str,
        parse: Callable[[bytes], Any],
        *,
        slow: StreamMethod | None = None,
        native: Callable[[Any, grpc.ServicerContext], Iterator[Message]] | None = None,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """A server-streaming method, one thread of the stream pool per open stream: `slow`
        (an asyncio servicer's async generator) run on the loop item by item, or `native`."""
        authorize = self._authorize(path)
        decode = self._guard.decoder(path, parse)
        metrics = rpc_metrics_for_path(path)
        streams = self._streams
        bridge = self._bridge

        def behaviour(raw: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            authorize(context)
            request = decode(raw, context)
            if not streams.enter():
                metrics.observe("RESOURCE_EXHAUSTED", 0.0)
                context.abort_with_status(streams.refusal)
            try:
                if native is not None:
                    items: Iterator[Message] = native(request, context)
                else:
                    assert slow is not None
                    items = bridge.stream(slow, request, context)
                for item in items:
                    yield item.SerializeToString()
            finally:
                streams.leave()

        # grpc's sync server runs a behaviour in its `experimental_thread_pool` when it has one.
        behaviour.experimental_thread_pool = self._stream_pool  # type: ignore[attr-defined]
        return grpc.unary_stream_rpc_method_handler(behaviour)


def _nobody(context: grpc.ServicerContext) -> None:
    return None


class SyncServer:
    """grpc's sync server with the awaitable `start`/`stop` of the rest of the code: stopping
    waits off the loop, since the calls it lets finish may need the loop."""

    def __init__(
        self,
        server: grpc.Server,
        pools: tuple[ThreadPoolExecutor, ...],
        generic: Mapping[str, dict[str, grpc.RpcMethodHandler[Any, Any]]],
    ) -> None:
        self.grpc = server
        self._pools = pools
        for service, methods in generic.items():
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service, methods),)
            )
            server.add_registered_method_handlers(service, dict(methods))

    def add_insecure_port(self, address: str) -> int:
        return self.grpc.add_insecure_port(address)

    async def start(self) -> None:
        self.grpc.start()

    async def stop(self, grace: float | None) -> None:
        stopped = self.grpc.stop(grace)
        await asyncio.to_thread(stopped.wait)
        for pool in self._pools:
            pool.shutdown(wait=False, cancel_futures=True)
