"""How fresh a local-evaluation client's answers are: `min_revision` is honoured locally, and a
change made through another replica is pushed to it (not polled for)."""

from __future__ import annotations

from pathlib import Path

import pytest
from nchat.entitlements.client import (
    AsyncEntitlementsClient,
    EntitlementsClient,
    FailedPrecondition,
)

from entitlements.policies import Overrides
from tests.clients.conftest import TOKEN, eventually
from tests.conftest import PostgresServer
from tests.replicas import replica_settings, two_replicas
from tests.server.conftest import subscription


async def test_local_evaluation_answers_min_revision_locally_only_when_its_copy_is_that_fresh(
    database_url: str, tmp_path: Path
) -> None:
    # B's change feed does not deliver during the test: its cache (and so the client's copy)
    # stays behind A's writes unless a check demands a revision.
    settings = replica_settings(
        tmp_path,
        ENTITLEMENTS_CHANGE_FEED_INTERVAL_SECONDS="60",
        ENTITLEMENTS_CHANGE_FEED_LISTEN="0",
    )
    async with (
        two_replicas(database_url, settings, serving=True) as (a, b),
        AsyncEntitlementsClient(
            f"127.0.0.1:{b.port}", token=TOKEN, local_evaluation=True
        ) as client,
    ):
        await client.can_use_feature("ws-fresh", "apiAccess")
        await eventually(lambda: client.local_state().connected)
        before = await client.can_use_feature("ws-fresh", "apiAccess")
        assert (before.source, before.plan_id) == ("local", "free")
        assert before.as_of is not None

        ent = await a.deps.service.save_subscription(subscription("ws-fresh", "starter"))

        stale = await client.can_use_feature("ws-fresh", "apiAccess")
        assert (stale.source, stale.plan_id) == ("local", "free")  # no token: the local copy
        # A read-through to the database: a loaded test machine can take longer than the
        # client's default hot-path deadline.
        fresh = await client.can_use_feature(
            "ws-fresh", "apiAccess", min_revision=ent.revision, timeout=5
        )
        assert (fresh.source, fresh.allowed, fresh.plan_id) == ("rpc", True, "starter")
        assert fresh.revision == ent.revision and fresh.as_of is not None
        # B read the newer revision for the RPC and pushed it down the stream: from now on the
        # local copy is fresh enough, for this token too.
        await eventually(lambda: _local_revision(client, "ws-fresh") >= ent.revision)
        limit = await client.check_limit("ws-fresh", "maxUsers", 8, min_revision=ent.revision)
        assert (limit.source, limit.limit, limit.revision) == ("local", 50, ent.revision)
        with pytest.raises(FailedPrecondition) as ahead:  # asked of the server, which has not
            await client.check_limit(
                "ws-fresh", "maxUsers", 8, min_revision=ent.revision + 1, timeout=5
            )
        assert ahead.value.reason == "ERROR_REASON_STALE_REVISION"
        local = await client.can_use_feature("ws-fresh", "apiAccess", min_revision=ent.revision)
        assert (local.source, local.plan_id, local.revision) == ("local", "starter", ent.revision)


def _local_revision(client: AsyncEntitlementsClient | EntitlementsClient, account: str) -> int:
    store = client._store
    assert store is not None
    ent = store.entitlements(account)
    return ent.revision if ent is not None else -1


@pytest.mark.postgres
async def test_an_override_made_through_another_replica_is_pushed_to_a_local_client(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = await postgres_server.create_database()
    # A minute's poll: only NOTIFY can bring the change to B, and B's stream to the client.
    settings = replica_settings(tmp_path, ENTITLEMENTS_CHANGE_FEED_INTERVAL_SECONDS="60")
    try:
        async with (
            two_replicas(url, settings, serving=True) as (a, b),
            AsyncEntitlementsClient(
                f"127.0.0.1:{b.port}", token=TOKEN, local_evaluation=True
            ) as client,
        ):
            await client.can_use_feature("ws-push", "ssoIntegration")
            await eventually(lambda: client.local_state().connected)
            assert b.deps.feed is not None and b.deps.feed.listener is not None
            await eventually(lambda: b.deps.feed.listener.listening)  # type: ignore[union-attr]

            ent = await a.deps.service.set_overrides(
                "ws-push",
                Overrides(granted_features=frozenset({"ssoIntegration"})),
                expires_at=None,
                actor="test",
                reason="pilot",
            )

            await eventually(lambda: _local_revision(client, "ws-push") >= ent.revision)
            after = await client.can_use_feature("ws-push", "ssoIntegration")
            assert (after.source, after.allowed, after.revision) == ("local", True, ent.revision)
    finally:
        await postgres_server.drop_database(url)
