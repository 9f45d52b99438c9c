"""Replicas for tests: settings with the test callers, and two servers on one database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from entitlements.config import Settings
from entitlements.server.app import Running, build_deps, create_server
from entitlements.store.migrate import upgrade
from entitlements.store.repository import Store
from tests.server.conftest import CALLERS_TOML


def replica_settings(tmp_path: Path, **env: str) -> Settings:
    """Settings with the test callers file, plus `env`."""
    callers = tmp_path / "callers.toml"
    callers.write_text(CALLERS_TOML)
    return Settings.from_env({"ENTITLEMENTS_CALLERS_FILE": str(callers), **env})


@asynccontextmanager
async def two_replicas(
    url: str, settings: Settings, *, serving: bool = False
) -> AsyncIterator[tuple[Running, Running]]:
    """Two started servers on the database at `url` (migrated first); `serving` also marks
    them SERVING for health checks."""
    await upgrade(url)
    started: list[Running] = []
    try:
        for _ in range(2):
            store = Store.open(url)
            running = await create_server(settings, build_deps(settings, store), addr="127.0.0.1:0")
            running.deps.closers.insert(0, store.close)
            await running.server.start()
            if serving:
                await running.set_serving(True)
            started.append(running)
        yield started[0], started[1]
    finally:
        for running in started:
            await running.stop(0)
