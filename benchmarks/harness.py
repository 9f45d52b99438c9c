"""Starting servers for benchmarks and measuring calls against them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The server gets core 0 and this process core 1 when the machine has two or more.
PIN = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    """The pids of a process's children (`serve --workers N`: its workers)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its live descendants (the supervisor and its workers)."""
    total = cpu_seconds(pid)
    for child in children(pid):
        with contextlib.suppress(OSError):
            total += tree_cpu_seconds(child)
    return total


class _Process:
    """A server process on `port`: where to call it and its pid."""

    port: int
    process: subprocess.Popen[bytes] | None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


class Server(_Process):
    """`entitlements serve` in its own process (pinned to core 0), on a fresh database."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        args: tuple[str, ...] = (),
        cores: str = "0",
        migrate: bool = True,
        **env: str,
    ) -> None:
        self.args = args
        self.cores = cores
        self.migrate = migrate
        self.workdir = Path(tempfile.mkdtemp(prefix="entitlements-bench-"))
        self.database_url = database_url or f"sqlite:///{self.workdir / 'bench.db'}"
        self.port = free_port()
        self.env = {
            **os.environ,
            "ENTITLEMENTS_DEV_MODE": "1",
            "ENTITLEMENTS_GRPC_ADDR": f"127.0.0.1:{self.port}",
            "ENTITLEMENTS_HTTP_ADDR": f"127.0.0.1:{free_port()}",
            "ENTITLEMENTS_DATABASE_URL": self.database_url,
            "ENTITLEMENTS_LOG_LEVEL": "WARNING",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        cli = [sys.executable, "-m", "entitlements.cli"]
        if self.migrate:
            subprocess.run(
                [*cli, "migrate"], env=self.env, cwd=self.workdir, check=True, capture_output=True
            )
        pin = ["taskset", "-c", self.cores] if PIN else []
        self.process = subprocess.Popen(
            [*pin, *cli, "serve", *self.args],
            env=self.env,
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "server.log").open("wb"),
        )
        try:
            wait_serving(self.target, self.process)
        except BaseException:
            self.__exit__()  # no server left behind when it never came up
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


class ScriptServer(_Process):
    """`python -m <module> --port N <args>` in its own process (pinned to core 0): the reference
    servers and the transport prototypes, measured with the same `drive` as `Server`."""

    def __init__(self, module: str, *args: str, **env: str) -> None:
        self.port = free_port()
        self.command = [sys.executable, "-m", module, "--port", str(self.port), *args]
        self.env = {**os.environ, **env}
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ScriptServer:
        pin = ["taskset", "-c", "0"] if PIN else []
        self.process = subprocess.Popen([*pin, *self.command], env=self.env, cwd=ROOT)
        try:
            wait_serving(self.target, self.process)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def wait_serving(target: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until the health check at `target` says SERVING (fails if the process exits first)."""
    deadline = time.monotonic() + timeout
    # grpc's default reconnect backoff grows past 10 s: a server that starts slowly on a busy
    # machine would be seen long after it is up, or not within the timeout.
    fast = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]
    with grpc.insecure_channel(target, options=fast) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args} exited with {process.returncode}") from None
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)


@dataclass(frozen=True)
class Result:
    name: str
    calls: int
    seconds: float
    server_cpu: float
    items_per_call: int = 1
    client_cpu: float = 0.0

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds

    @property
    def items_per_second(self) -> float:
        return self.calls * self.items_per_call / self.seconds

    @property
    def cpu_per_call_us(self) -> float:
        return self.server_cpu / self.calls * 1e6

    @property
    def client_cpu_per_call_us(self) -> float:
        """The load generator's CPU per call (this process, every thread)."""
        return self.client_cpu / self.calls * 1e6


class Measured(Protocol):
    """A server process whose CPU time is read: `Server` or `ScriptServer`."""

    @property
    def pid(self) -> int: ...


async def drive(
    name: str,
    server: Measured,
    call: Callable[[int], Awaitable[object]],
    *,
    seconds: float = 5.0,
    concurrency: int = 64,
    items_per_call: int = 1,
    warmup: float = 1.0,
    server_cpu: Callable[[], float] | None = None,
) -> Result:
    """Keep `concurrency` calls in flight for `seconds` (after a warm-up) and count them.
    `server_cpu` reads the server's CPU seconds (default: `server`'s process alone)."""
    read_cpu = server_cpu or (lambda: cpu_seconds(server.pid))
    stop_at = 0.0
    counted = 0
    measuring = False

    async def worker(w: int) -> None:
        nonlocal counted
        i = w
        while time.perf_counter() < stop_at:
            await call(i)
            i += concurrency
            if measuring:
                counted += 1

    stop_at = time.perf_counter() + warmup
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    measuring = True
    cpu0 = read_cpu()
    client0 = time.process_time()
    t0 = time.perf_counter()
    stop_at = t0 + seconds
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - t0
    cpu = read_cpu() - cpu0
    client = time.process_time() - client0
    return Result(name, counted, elapsed, cpu, items_per_call, client)


def pin_client() -> None:
    if PIN:
        os.sched_setaffinity(0, {1})


@dataclass(frozen=True)
class Latency:
    name: str
    rate: float
    calls: int
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float


async def latency_at_rate(
    name: str, call: Callable[[int], Awaitable[object]], *, rate: float, seconds: float = 5.0
) -> Latency:
    """Open loop: start a call every 1/rate seconds whatever the answers do, and time each one
    from its scheduled start (so queueing in the client counts against the server, as it would
    for a caller)."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int, scheduled: float) -> None:
        nonlocal errors
        try:
            await call(i)
        except grpc.RpcError:
            errors += 1
            return
        latencies.append(loop.time() - scheduled)

    start = loop.time() + 0.05
    total = int(rate * seconds)
    # The load generator's own pauses would count against the server: no GC while measuring.
    gc.collect()
    gc.disable()
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    gc.enable()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return Latency(name, rate, total, errors, pct(0.50), pct(0.99), latencies[-1] * 1000)
