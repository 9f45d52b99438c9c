"""GET /healthz says the process is alive; GET /readyz says whether its dependencies answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from entitlements.store.migrate import upgrade
from entitlements.store.repository import Store
from tests.conftest import PostgresServer
from tests.faults import FaultyLink
from tests.observability.conftest import Ops, ops_settings, start_ops, stop_ops


async def test_healthz_and_readyz_answer_200_when_the_database_answers(ops: Ops) -> None:
    status, body, _ = await ops.get("/healthz")
    assert status == 200
    status, body, _ = await ops.get("/readyz")
    assert status == 200
    assert json.loads(body) == {"status": "ready", "checks": {"database": "ok"}}


async def test_readyz_is_503_naming_an_unreachable_chain_node(
    tmp_path: Path, sqlite_store: Store
) -> None:
    settings = ops_settings(
        tmp_path,
        ENTITLEMENTS_RPC_URL_LOCAL="http://127.0.0.1:1",
        ENTITLEMENTS_RPC_TIMEOUT_SECONDS="1",
    )
    ops = await start_ops(settings, sqlite_store)
    try:
        status, body, _ = await ops.get("/readyz")
    finally:
        await stop_ops(ops)
    assert status == 503
    answer = json.loads(body)
    assert answer["down"] == ["chain:local"]
    assert answer["checks"]["database"] == "ok"
    assert answer["checks"]["chain:local"].startswith("down")


@pytest.fixture
async def linked_store(postgres_server: PostgresServer) -> AsyncIterator[tuple[Store, FaultyLink]]:
    """A migrated PostgreSQL database reached through a link the test can cut."""
    url = await postgres_server.create_database()
    await upgrade(url)
    parsed = make_url(url)
    link = await FaultyLink(parsed.host or "127.0.0.1", parsed.port or 5432).start()
    proxied = parsed.set(host="127.0.0.1", port=link.port).render_as_string(hide_password=False)
    store = Store.open(proxied)
    try:
        yield store, link
    finally:
        await store.close()
        await link.close()
        await postgres_server.drop_database(url)


async def _ready(ops: Ops, want: int, seconds: float = 10.0) -> dict[str, object]:
    """Poll /readyz until it answers `want` (a pooled connection may need one try to notice)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        status, body, _ = await ops.get("/readyz")
        if status == want or asyncio.get_running_loop().time() > deadline:
            assert status == want, body
            return json.loads(body)  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)


@pytest.mark.postgres
async def test_readyz_turns_503_when_the_database_is_cut_and_200_when_it_is_back(
    tmp_path: Path, linked_store: tuple[Store, FaultyLink]
) -> None:
    store, link = linked_store
    ops = await start_ops(ops_settings(tmp_path), store)
    try:
        await _ready(ops, 200)
        link.cut()
        down = await _ready(ops, 503)
        assert down["status"] == "unavailable"
        assert down["down"] == ["database"]
        status, _, _ = await ops.get("/healthz")
        assert status == 200  # alive, just not ready
        link.restore()
        up = await _ready(ops, 200)
        assert up["checks"] == {"database": "ok"}
    finally:
        await stop_ops(ops)
