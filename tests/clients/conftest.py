"""A real server (in-process, SQLite, auth on) for the client tests, and helpers around it."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from entitlements.config import Settings
from entitlements.server.app import Running, build_deps, create_server
from entitlements.store.migrate import upgrade
from entitlements.store.repository import Store
from tests.server.conftest import CALLERS_TOML

#: A caller with every scope (tests/server/conftest.py's "ops").
TOKEN = "ops-token-0000000000001"
#: A caller with entitlements:read only.
READ_ONLY_TOKEN = "chat-backend-token-0001"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    callers = tmp_path / "callers.toml"
    callers.write_text(CALLERS_TOML)
    return Settings.from_env({"ENTITLEMENTS_CALLERS_FILE": str(callers)})


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'clients.db'}"
    await upgrade(url)
    opened = Store.open(url)
    try:
        yield opened
    finally:
        await opened.close()


async def start_server(settings: Settings, store: Store, port: int = 0) -> Running:
    """A serving server on 127.0.0.1:`port` (0: a free one)."""
    running = await create_server(settings, build_deps(settings, store), addr=f"127.0.0.1:{port}")
    await running.server.start()
    await running.set_serving(True)
    return running


@pytest.fixture
async def server(settings: Settings, store: Store) -> AsyncIterator[Running]:
    running = await start_server(settings, store)
    try:
        yield running
    finally:
        await running.stop(0)


async def eventually(
    predicate: Callable[[], bool], within: float = 5.0, interval: float = 0.01
) -> float:
    """Wait until `predicate()` holds; the seconds it took. Fails the test after `within` s."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(interval)
    return time.monotonic() - start


class CountingInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Counts the unary calls a sync client makes, by method."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.calls.append(details.method.rsplit("/", 1)[-1])
        return continuation(details, request)


class AsyncCountingInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Counts the unary calls an asyncio client makes, by method."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        method = details.method
        name = method.decode() if isinstance(method, bytes) else method
        self.calls.append(name.rsplit("/", 1)[-1])
        return await continuation(details, request)


class FlakyProxy:
    """A TCP proxy that cuts each connection at a random moment, both ways at once.

    Every cut fails the calls in flight with UNAVAILABLE, after the server may or may not have
    acted on them: the case an idempotency key exists for.
    """

    def __init__(self, upstream_port: int, *, seed: int, max_life: float = 0.15) -> None:
        self.upstream_port = upstream_port
        self.random = random.Random(seed)
        self.max_life = max_life
        self.port = 0
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> FlakyProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            life = self.random.uniform(0.01, self.max_life)
            pipes = [
                asyncio.create_task(_pipe(reader, up_writer)),
                asyncio.create_task(_pipe(up_reader, writer)),
            ]
            _, pending = await asyncio.wait(pipes, timeout=life)
            if pending:
                self.cuts += 1
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.transport.abort()
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
