"""Local evaluation: answers from memory, kept fresh by the watch stream, RPC when it is down."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nchat.entitlements.client import (
    AsyncEntitlementsClient,
    ClientOptions,
    EntitlementsClient,
    FeatureDecisionReason,
    InvalidArgument,
    RetryPolicy,
    UsageLevel,
)

from entitlements.config import Settings
from entitlements.policies import Overrides
from entitlements.server.app import Running
from entitlements.store.repository import Store
from tests.clients.conftest import (
    TOKEN,
    AsyncCountingInterceptor,
    CountingInterceptor,
    eventually,
    start_server,
)
from tests.processes import ServerProcess, migrate
from tests.server.conftest import subscription

#: Reconnect quickly, so the tests do not wait out production backoffs.
FAST = ClientOptions(reconnect=RetryPolicy(max_attempts=1, initial_backoff=0.05, max_backoff=0.2))


async def test_checks_are_answered_from_memory_without_rpc(server: Running) -> None:
    counter = AsyncCountingInterceptor()
    async with AsyncEntitlementsClient(
        f"127.0.0.1:{server.port}", token=TOKEN, local_evaluation=True, interceptors=[counter]
    ) as client:
        first = await client.can_use_feature("ws-local", "apiAccess")
        assert first.source == "rpc"
        await eventually(lambda: client.local_state().connected)
        calls_before = len(counter.calls)
        for _ in range(200):
            check = await client.can_use_feature("ws-local", "apiAccess")
            assert check.source == "local"
            assert (check.allowed, check.plan_id, check.upgrade_plan_id) == (
                False,
                "free",
                "starter",
            )
            assert check.reason is FeatureDecisionReason.FEATURE_NOT_IN_PLAN
            assert check.message == first.message and check.revision == first.revision
        limit = await client.check_limit("ws-local", "maxUsers", 8)
        assert (limit.source, limit.allowed, limit.percentage) == ("local", True, 80.0)
        assert limit.level is UsageLevel.WARNING
        assert counter.calls[calls_before:] == []  # not one RPC for 201 answers
        state = client.local_state()
        assert state.connected and state.staleness_bound_seconds == 0.0
        assert state.local_answers >= 201
        # Bad input is still refused, locally, with the same field the server would name.
        try:
            await client.can_use_feature("ws-local", "teleportation")
        except InvalidArgument as exc:
            assert exc.field == "feature"
        else:
            raise AssertionError("unknown feature accepted")


async def test_local_answer_changes_within_a_second_of_a_plan_change(server: Running) -> None:
    async with AsyncEntitlementsClient(
        f"127.0.0.1:{server.port}", token=TOKEN, local_evaluation=True
    ) as client:
        await client.can_use_feature("ws-upgrade", "customBranding")
        await eventually(lambda: client.local_state().connected)
        before = await client.can_use_feature("ws-upgrade", "customBranding")
        assert (before.source, before.allowed) == ("local", False)

        await server.deps.service.save_subscription(subscription("ws-upgrade", "starter"))

        took = await eventually(
            lambda: answered_locally(client, "ws-upgrade", "customBranding"), within=1.0
        )
        after = await client.can_use_feature("ws-upgrade", "customBranding")
        assert (after.source, after.allowed, after.plan_id) == ("local", True, "starter")
        assert after.revision > before.revision
        assert after.reason is FeatureDecisionReason.INCLUDED_IN_PLAN
        assert took < 1.0


async def test_sync_client_follows_a_plan_change_from_its_watch_thread(server: Running) -> None:
    counter = CountingInterceptor()
    client = EntitlementsClient(
        f"127.0.0.1:{server.port}", token=TOKEN, local_evaluation=True, interceptors=[counter]
    )
    try:
        assert not (await asyncio.to_thread(client.can_use_feature, "ws-sync", "webhooks")).allowed
        await eventually(lambda: client.local_state().connected)
        calls = len(counter.calls)
        await server.deps.service.save_subscription(subscription("ws-sync", "pro"))
        for _ in range(100):  # within a second
            if (await asyncio.to_thread(client.can_use_feature, "ws-sync", "webhooks")).allowed:
                break
            await asyncio.sleep(0.01)
        check = await asyncio.to_thread(client.can_use_feature, "ws-sync", "ssoIntegration")
        assert (check.source, check.allowed, check.plan_id) == ("local", True, "pro")
        assert counter.calls[calls:] == []
    finally:
        await asyncio.to_thread(client.close)


async def test_stream_loss_serves_stale_answers_then_recovers_on_restart(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    first = await start_server(settings, store)
    port = first.port
    client = AsyncEntitlementsClient(
        f"127.0.0.1:{port}", token=TOKEN, local_evaluation=True, local=FAST
    )
    second: Running | None = None
    try:
        await client.can_use_feature("ws-restart", "apiAccess")
        await eventually(lambda: client.local_state().connected)

        await first.stop(0)  # the stream ends with UNAVAILABLE; the port is closed
        await eventually(lambda: not client.local_state().connected)
        stale = await client.can_use_feature("ws-restart", "apiAccess")
        assert (stale.source, stale.allowed, stale.plan_id) == ("stale", False, "free")
        await asyncio.sleep(0.05)
        state = client.local_state()
        assert 0 < state.staleness_bound_seconds < math.inf
        assert state.last_error.startswith("UNAVAILABLE")

        # A new server on the same port and database, where the account was upgraded meanwhile.
        second = await start_server(settings, store, port=port)
        await second.deps.service.save_subscription(subscription("ws-restart", "starter"))
        await eventually(lambda: client.local_state().connected, within=10)
        # The change reaches the client in the new stream's initial state or right after it.
        await eventually(lambda: answered_locally(client, "ws-restart", "apiAccess"), within=1.0)
        recovered = await client.can_use_feature("ws-restart", "apiAccess")
        assert (recovered.source, recovered.allowed, recovered.plan_id) == (
            "local",
            True,
            "starter",
        )
        assert client.local_state().staleness_bound_seconds == 0.0
        assert client.local_state().reconnects >= 1
    finally:
        await client.close()
        if second is not None:
            await second.stop(0)


async def test_new_accounts_join_the_one_stream(server: Running) -> None:
    async with AsyncEntitlementsClient(
        f"127.0.0.1:{server.port}", token=TOKEN, local_evaluation=True
    ) as client:
        accounts = [f"ws-many-{i}" for i in range(30)]
        for account in accounts:
            await client.can_use_feature(account, "webhooks")
        await eventually(
            lambda: client.local_state().connected and client.local_state().accounts == 30
        )
        for account in accounts:
            assert (await client.can_use_feature(account, "webhooks")).source == "local"
        assert server.deps.hub.subscriber_count == 1


@pytest.mark.slow
def test_sync_client_falls_back_to_rpc_while_the_server_restarts(tmp_path: Path) -> None:
    """A real `entitlements serve` process, stopped and started again on its port and database."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'restart.db'}"
    process = ServerProcess(url, tmp_path)
    migrate(process.env, tmp_path)
    process.start()
    counter = CountingInterceptor()
    try:
        with EntitlementsClient(
            process.target, local_evaluation=True, local=FAST, interceptors=[counter]
        ) as client:
            assert client.can_use_feature("ws-proc", "apiAccess").source == "rpc"
            wait_until(lambda: client.local_state().connected)
            assert client.can_use_feature("ws-proc", "apiAccess").source == "local"

            process.stop()
            wait_until(lambda: not client.local_state().connected)
            calls = len(counter.calls)
            stale = client.can_use_feature("ws-proc", "apiAccess")
            assert stale.source == "stale" and not stale.allowed
            assert len(counter.calls) > calls  # it asked the server first
            assert client.local_state().staleness_bound_seconds > 0

            process.start()
            wait_until(lambda: client.local_state().connected, timeout=15)
            assert client.can_use_feature("ws-proc", "apiAccess").source == "local"
    finally:
        process.stop()


def answered_locally(client: AsyncEntitlementsClient, account_id: str, feature: str) -> bool:
    """Whether local evaluation allows `feature` now (no RPC: it only looks at memory)."""
    store = client._store
    assert store is not None
    check = store.feature(account_id, feature)
    return check is not None and check.allowed


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        time.sleep(0.01)


async def test_local_answers_equal_the_servers_for_every_feature_and_override(
    server: Running,
) -> None:
    """Same allowed, plan, upgrade plan, reason and message as CanUseFeature, for each feature of
    the catalog, on an account with a plan, a granted feature, a revoked one and a limit override.
    """
    service = server.deps.service
    await service.save_subscription(subscription("ws-parity", "starter"))
    await service.set_overrides(
        "ws-parity",
        Overrides(
            limits={"maxUsers": 75, "maxBots": None},
            granted_features=frozenset({"ssoIntegration"}),
            revoked_features=frozenset({"webhooks"}),
        ),
        expires_at=None,
        actor="test",
        reason="parity",
    )
    target = f"127.0.0.1:{server.port}"
    async with (
        AsyncEntitlementsClient(target, token=TOKEN) as rpc,
        AsyncEntitlementsClient(target, token=TOKEN, local_evaluation=True) as local,
    ):
        await local.can_use_feature("ws-parity", "apiAccess")
        await eventually(lambda: local.local_state().connected)
        features = [f.key for f in (await rpc.list_plans()).features]
        assert len(features) > 10
        for feature in features:
            remote = await rpc.can_use_feature("ws-parity", feature)
            mine = await local.can_use_feature("ws-parity", feature)
            assert mine.source == "local"
            assert dataclasses.replace(mine, source="rpc") == remote, feature
        for limit, current in (("maxUsers", 70), ("maxUsers", 75), ("maxBots", 10**6)):
            remote_limit = await rpc.check_limit("ws-parity", limit, current)
            mine_limit = await local.check_limit("ws-parity", limit, current)
            assert mine_limit.source == "local"
            assert dataclasses.replace(mine_limit, source="rpc") == remote_limit, (limit, current)


async def test_an_answer_that_changes_by_time_alone_is_not_served_past_its_end(
    server: Running,
) -> None:
    """A subscription cancelled at its period end: the server pushes nothing when the period
    ends, so the local answer must stop at the end instead of granting the plan forever."""
    ends = datetime.now(UTC) + timedelta(seconds=1.5)
    await server.deps.service.save_subscription(
        subscription("ws-ending", "pro", period_end=ends, cancel_at_period_end=True)
    )
    async with AsyncEntitlementsClient(
        f"127.0.0.1:{server.port}", token=TOKEN, local_evaluation=True
    ) as client:
        await client.can_use_feature("ws-ending", "ssoIntegration")
        await eventually(lambda: client.local_state().connected)
        before = await client.can_use_feature("ws-ending", "ssoIntegration")
        assert (before.source, before.allowed, before.plan_id) == ("local", True, "pro")
        await asyncio.sleep(max(0.0, (ends - datetime.now(UTC)).total_seconds()) + 0.1)
        after = await client.can_use_feature("ws-ending", "ssoIntegration")
        assert (after.allowed, after.plan_id) == (False, "free")
        # ... and the stream, reopened for the new state, serves it locally again.
        await eventually(lambda: answered_locally_as(client, "ws-ending", "ssoIntegration", False))


def answered_locally_as(
    client: AsyncEntitlementsClient, account_id: str, feature: str, allowed: bool
) -> bool:
    store = client._store
    assert store is not None
    check = store.feature(account_id, feature)
    return check is not None and check.allowed is allowed


#: The unary checks a local answer replaces (the watch stream and the catalog are not checks).
CHECK_RPCS = ("CanUseFeature", "CheckFeatures", "GetEntitlements", "CheckLimit")


def server_checks() -> int:
    """How many check RPCs the in-process server has answered, from its own request metric."""
    from entitlements.observability.metrics import REGISTRY

    return sum(
        int(sample.value)
        for family in REGISTRY.collect()
        if family.name == "entitlements_rpc_requests"
        for sample in family.samples
        if sample.name == "entitlements_rpc_requests_total"
        and sample.labels["method"] in CHECK_RPCS
    )


async def test_the_call_after_a_miss_is_answered_locally(server: Running) -> None:
    """The first check of an unseen account asks the server; the very next one does not."""
    async with AsyncEntitlementsClient(
        f"127.0.0.1:{server.port}", token=TOKEN, local_evaluation=True
    ) as client:
        before = server_checks()
        first = await client.can_use_feature("ws-second", "apiAccess")
        assert first.source == "rpc" and not first.allowed
        assert server_checks() == before + 1
        second = await client.can_use_feature("ws-second", "apiAccess")
        assert (second.source, second.allowed, second.revision) == ("local", False, first.revision)
        limit = await client.check_limit("ws-second", "maxUsers", 2)
        assert limit.source == "local"
        assert server_checks() == before + 1


async def test_the_sync_clients_call_after_a_miss_is_answered_locally(server: Running) -> None:
    def two_checks() -> tuple[str, str]:
        with EntitlementsClient(
            f"127.0.0.1:{server.port}", token=TOKEN, local_evaluation=True
        ) as client:
            first = client.can_use_feature("ws-second-sync", "webhooks")
            second = client.can_use_feature("ws-second-sync", "customBranding")
            return first.source, second.source

    before = server_checks()
    assert await asyncio.to_thread(two_checks) == ("rpc", "local")
    assert server_checks() == before + 1


async def test_a_local_answer_is_prepared_once_and_shared(server: Running) -> None:
    """Local checks hand out the answer prepared when the state arrived: the same object each
    time (nothing is built per call), until a new state replaces it."""
    async with AsyncEntitlementsClient(
        f"127.0.0.1:{server.port}", token=TOKEN, local_evaluation=True
    ) as client:
        await client.can_use_feature("ws-prepared", "webhooks")
        await eventually(lambda: client.local_state().connected)
        first = await client.can_use_feature("ws-prepared", "webhooks")
        assert first.source == "local"
        assert await client.can_use_feature("ws-prepared", "webhooks") is first
        await server.deps.service.save_subscription(subscription("ws-prepared", "pro"))
        await eventually(lambda: answered_locally(client, "ws-prepared", "webhooks"))
        after = await client.can_use_feature("ws-prepared", "webhooks")
        assert after is not first and after.revision > first.revision and after.allowed


async def test_the_stream_is_resynced_once_per_interval_while_answers_stay_local(
    server: Running,
) -> None:
    """Past `resync_interval` the stream is reopened for a full fresh state; checks keep being
    answered locally meanwhile, and one resync is one reopen (not one per account checked)."""
    options = dataclasses.replace(FAST, resync_interval=0.4)
    async with AsyncEntitlementsClient(
        f"127.0.0.1:{server.port}", token=TOKEN, local_evaluation=True, local=options
    ) as client:
        accounts = [f"ws-resync-{i}" for i in range(5)]
        for account in accounts:
            await client.can_use_feature(account, "apiAccess")
        await eventually(lambda: client.local_state().connected)
        await asyncio.sleep(0.1)  # the reopens of the new accounts are done
        start = client.local_state().reconnects
        sources = set()
        deadline = time.monotonic() + 1.3
        while time.monotonic() < deadline:
            for account in accounts:
                sources.add((await client.can_use_feature(account, "apiAccess")).source)
            await asyncio.sleep(0.005)
        resyncs = client.local_state().reconnects - start
        assert sources == {"local"}
        assert 2 <= resyncs <= 4, resyncs  # 1.3 s / 0.4 s
