"""CanUseFeature with tracing off (the default: nothing installed) and on (every call a span,
batched to an OTLP/gRPC receiver in this process). `python -m benchmarks.tracing` runs it alone.
"""

from __future__ import annotations

import argparse
from concurrent import futures
from typing import Any

import grpc
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as ent_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

from benchmarks.harness import Result, Server, drive, pin_client

NAME = "EntitlementsService/CanUseFeature"


class _Sink(otlp_grpc.TraceServiceServicer):
    """Counts the spans it is sent, as a collector would receive them."""

    def __init__(self) -> None:
        self.spans = 0

    def Export(self, request: Any, context: Any) -> otlp_pb.ExportTraceServiceResponse:
        self.spans += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        return otlp_pb.ExportTraceServiceResponse()


async def _can_use(server: Server, name: str, seconds: float) -> Result:
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = ent_grpc.EntitlementsServiceStub(channel)
        request = ent_pb.CanUseFeatureRequest(account_id="ws-1", feature="customBranding")
        return await drive(name, server, lambda i: stub.CanUseFeature(request), seconds=seconds)


async def bench_tracing(seconds: float, *, off: bool = True) -> dict[str, Any]:
    """The traced figure (and, with `off`, the same call on an untraced server)."""
    results: dict[str, Any] = {}
    if off:
        with Server() as server:
            results["off"] = await _can_use(server, f"{NAME}, tracing off", seconds)
    sink = _Sink()
    receiver = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    otlp_grpc.add_TraceServiceServicer_to_server(sink, receiver)
    port = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()
    try:
        with Server(
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
            OTEL_SERVICE_NAME="entitlements-bench",
        ) as server:
            results["on"] = await _can_use(server, f"{NAME}, tracing on (OTLP)", seconds)
    finally:
        receiver.stop(0)
    results["spans_received"] = sink.spans
    return results


if __name__ == "__main__":
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracing")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    pin_client()
    found = uvloop.run(bench_tracing(args.seconds))
    for key in ("off", "on"):
        r: Result = found[key]
        print(
            f"{r.name:<52} {r.calls_per_second:>8,.0f} calls/s"
            f"  {r.cpu_per_call_us:>6,.0f} us server CPU/call"
        )
    print(f"spans received by the OTLP receiver: {found['spans_received']:,}")
