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
from tests.chain_fixtures import AnvilNode
from tests.conftest import PostgresServer
from tests.faults import FaultyLink
from tests.observability.conftest import Ops, ops_settings, start_ops, stop_ops


async def test_healthz_and_readyz_answer_200_when_the_database_answers(ops: Ops) -> None:
    status, body, _ = await ops.get("/healthz")
    assert status == 200
    status, body, _ = await ops.get("/readyz")
    assert status == 200
    assert json.loads(body) == {"status": "ready", "checks": {"database": "ok"}}


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


ADMIN = {"Authorization": "Bearer ops-token-0000000000001"}
READER = {"Authorization": "Bearer chat-backend-token-0001"}


def _secrets(url: str) -> list[str]:
    parsed = make_url(url)
    return [s for s in (parsed.username, parsed.host, str(parsed.port), parsed.database) if s]


@pytest.mark.postgres
async def test_readyz_tells_nobody_but_an_admin_where_the_database_is(
    tmp_path: Path, linked_store: tuple[Store, FaultyLink]
) -> None:
    store, link = linked_store
    ops = await start_ops(ops_settings(tmp_path), store)
    try:
        link.cut()
        await _ready(ops, 503)
        secrets = _secrets(store.engine.url.render_as_string(hide_password=False))
        for path, headers in (
            ("/readyz", {}),
            ("/readyz?verbose", {}),
            ("/readyz?verbose", READER),  # a known caller without the admin scope
        ):
            status, body, _ = await ops.get(path, headers)
            assert status == 503
            leaked = [s for s in secrets if s in body]
            assert not leaked, (path, body)
            assert json.loads(body)["status"] == "unavailable"
        status, body, _ = await ops.get("/readyz?verbose", ADMIN)
        assert status == 503
        database = json.loads(body)["dependencies"]["database"]
        assert database["state"] == "down"
        assert str(link.port) in database["detail"]  # the admin sees where and why
    finally:
        await stop_ops(ops)


async def test_readyz_stays_200_while_a_chain_node_is_down_and_verbose_says_so(
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
        assert status == 200, body  # cached checks and the database still answer
        assert json.loads(body)["status"] == "ready"
        status, body, _ = await ops.get("/readyz?verbose")
        assert status == 200
        chain = json.loads(body)["dependencies"]["chain:local"]
        assert chain["state"] == "down"
        assert chain["required"] is False
        assert "detail" not in chain  # error texts are for admins
        status, body, _ = await ops.get("/readyz?verbose", ADMIN)
        chain = json.loads(body)["dependencies"]["chain:local"]
        assert chain["state"] == "down" and chain["detail"]
        _, metrics, _ = await ops.get("/metrics")
        assert 'entitlements_dependency_up{dependency="chain:local"} 0.0' in metrics
        assert 'entitlements_dependency_up{dependency="database"} 1.0' in metrics
    finally:
        await stop_ops(ops)


async def test_a_chain_head_standing_still_shows_as_stalled_without_failing_readiness(
    tmp_path: Path, sqlite_store: Store
) -> None:
    node = AnvilNode().start()  # anvil mines only when sent a transaction: its head stands still
    try:
        ops = await start_ops(
            ops_settings(tmp_path, ENTITLEMENTS_RPC_URL_LOCAL=node.url), sqlite_store
        )
        try:
            assert ops.running.deps.ops is not None
            ops.running.deps.ops.stall_after_seconds = {"local": 0.3}
            status, body, _ = await ops.get("/readyz?verbose")
            chain = json.loads(body)["dependencies"]["chain:local"]
            assert (status, chain["state"]) == (200, "ok")
            first = chain["head_block"]
            await asyncio.sleep(0.5)
            status, body, _ = await ops.get("/readyz?verbose")
            answer = json.loads(body)
            assert (status, answer["status"]) == (200, "ready")
            chain = answer["dependencies"]["chain:local"]
            assert chain["state"] == "stalled"
            assert chain["head_age_seconds"] >= 0.3
            _, metrics, _ = await ops.get("/metrics")
            assert 'entitlements_chain_head_age_seconds{network="local"}' in metrics
            node.rpc("evm_mine")
            status, body, _ = await ops.get("/readyz?verbose")
            chain = json.loads(body)["dependencies"]["chain:local"]
            assert (chain["state"], chain["head_block"]) == ("ok", first + 1)
        finally:
            await stop_ops(ops)
    finally:
        node.stop()
