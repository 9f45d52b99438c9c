"""The reference servers `make bench` measures the service against: trivial `grpc.health.v1`
servers with nothing else on them, one per transport.

`python -m benchmarks.reference --port N --transport sync` serves the standard health servicer
from `grpc.server` with a 16-thread pool (the floor of Python gRPC on this machine);
`--transport aio` serves `health.aio.HealthServicer` from `grpc.aio.server` on uvloop, the
transport the service runs on.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2_grpc

#: The sync server's worker threads (grpc's examples use 10; 16 measured slightly better here).
SYNC_THREADS = 16


def serve_sync(port: int) -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=SYNC_THREADS))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(0)


async def serve_aio(port: int) -> None:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reference")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--transport", choices=("sync", "aio"), default="sync")
    args = parser.parse_args()
    if args.transport == "sync":
        serve_sync(args.port)
    else:
        import uvloop

        uvloop.run(serve_aio(args.port))
