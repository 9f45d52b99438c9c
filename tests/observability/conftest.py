"""A gRPC server and the HTTP shim with its operations routes (/metrics, /readyz, /admin)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from adapters.webhooks import WebhookServer
from entitlements.config import Settings
from entitlements.server.app import Running, build_deps, create_server
from entitlements.server.billing_setup import webhook_server
from entitlements.store.migrate import upgrade
from entitlements.store.repository import Store
from tests.server.conftest import CALLERS_TOML


@dataclass
class Ops:
    running: Running
    http: WebhookServer

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    async def get(
        self, path: str, headers: Mapping[str, str] | None = None
    ) -> tuple[int, str, Mapping[str, str]]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.base + path, headers=dict(headers or {})) as response,
        ):
            return response.status, await response.text(), dict(response.headers)


def ops_settings(tmp_path: Path, **env: str) -> Settings:
    callers = tmp_path / "callers.toml"
    callers.write_text(CALLERS_TOML)
    return Settings.from_env({"ENTITLEMENTS_CALLERS_FILE": str(callers), **env})


async def start_ops(settings: Settings, store: Store) -> Ops:
    deps = build_deps(settings, store)
    running = await create_server(settings, deps, addr="127.0.0.1:0")
    await running.server.start()
    await running.set_serving(True)
    http = webhook_server(settings, deps.billing, addr="127.0.0.1:0", ops=deps.ops)
    await http.start()
    return Ops(running, http)


async def stop_ops(ops: Ops) -> None:
    await ops.http.stop()
    await ops.running.stop(0)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}"
    await upgrade(url)
    store = Store.open(url)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def ops(tmp_path: Path, sqlite_store: Store) -> AsyncIterator[Ops]:
    running = await start_ops(ops_settings(tmp_path), sqlite_store)
    try:
        yield running
    finally:
        await stop_ops(running)
