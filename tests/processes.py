"""Running `entitlements serve` as a real process, as operators and other services do."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ENTITLEMENTS = [sys.executable, "-m", "entitlements.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def migrate(env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run(
        [*ENTITLEMENTS, "migrate"], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


class ServerProcess:
    """One `entitlements serve` process on a free port (dev mode unless env says otherwise)."""

    def __init__(self, database_url: str, cwd: Path, **extra_env: str) -> None:
        self.port = free_port()
        self.cwd = cwd
        self.env = {
            **os.environ,
            "ENTITLEMENTS_DEV_MODE": "1",
            "ENTITLEMENTS_GRPC_ADDR": f"127.0.0.1:{self.port}",
            "ENTITLEMENTS_HTTP_ADDR": f"127.0.0.1:{free_port()}",
            "ENTITLEMENTS_DATABASE_URL": database_url,
            "ENTITLEMENTS_LOG_LEVEL": "WARNING",
            **extra_env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log = cwd / f"server-{self.port}.log"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> ServerProcess:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*ENTITLEMENTS, "serve"], env=self.env, cwd=self.cwd, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited: {self.log.read_text()}")
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return self
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server did not serve: {self.log.read_text()}")
                time.sleep(0.05)

    def kill(self) -> None:
        """kill -9: no shutdown, no flush."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
