"""The RPC clients (sync and asyncio) against a real server: answers as plain dataclasses,
errors as the client's exception tree, retries bounded."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import nchat.entitlements.client as client_pkg
import pytest
from nchat.entitlements.client import (
    AlreadyExists,
    AsyncEntitlementsClient,
    EntitlementsClient,
    FeatureCheck,
    FeatureDecisionReason,
    InvalidArgument,
    PermissionDenied,
    RetryPolicy,
    Unauthenticated,
    Unavailable,
    UsageEvent,
    UsageEventStatus,
    UsageLevel,
)

from entitlements.server.app import Running
from tests.clients.conftest import READ_ONLY_TOKEN, TOKEN, CountingInterceptor
from tests.processes import free_port


def test_public_surface_is_exactly_all_and_sorted() -> None:
    public = {
        name
        for name in vars(client_pkg)
        if not name.startswith("_") and name != "annotations"  # from __future__
    }
    assert public == set(client_pkg.__all__)
    assert client_pkg.__all__ == sorted(client_pkg.__all__)
    for name in client_pkg.__all__:
        obj = getattr(client_pkg, name)
        if isinstance(obj, type):
            assert obj.__module__ == "nchat.entitlements.client", name


async def test_async_client_answers_the_seed_examples(server: Running) -> None:
    async with AsyncEntitlementsClient(f"127.0.0.1:{server.port}", token=TOKEN) as client:
        check = await client.can_use_feature("ws-seed", "apiAccess")
        assert isinstance(check, FeatureCheck)
        assert (check.allowed, check.plan_id, check.upgrade_plan_id) == (False, "free", "starter")
        assert check.reason is FeatureDecisionReason.FEATURE_NOT_IN_PLAN
        assert check.source == "rpc"
        with pytest.raises(dataclasses.FrozenInstanceError):
            check.allowed = True  # type: ignore[misc]

        path = await client.get_upgrade_path("free", "customBranding")
        assert (path.plan_id, path.already_included) == ("starter", False)

        limit = await client.check_limit("ws-seed", "maxUsers", 8)
        assert (limit.allowed, limit.limit, limit.percentage) == (True, 10, 80.0)
        assert limit.level is UsageLevel.WARNING

        minimum = await client.check_minimum_plan("ws-seed", "pro")
        assert (minimum.allowed, minimum.plan_id) == (False, "free")

        ent = await client.get_entitlements("ws-seed")
        assert ent.plan_id == "free" and "apiAccess" not in ent.features
        assert ent.limit("maxUsers") is not None and ent.limit("maxUsers").value == 10  # type: ignore[union-attr]

        catalog = await client.list_plans()
        assert [p.id for p in catalog.plans] == ["free", "starter", "pro", "business", "enterprise"]
        assert catalog.upgrade_path("free", "ssoIntegration") == "pro"

        results = await client.check_features([("ws-seed", "webhooks"), ("ws-seed", "nope")])
        assert isinstance(results[0], FeatureCheck) and results[0].upgrade_plan_id == "starter"
        assert isinstance(results[1], InvalidArgument) and results[1].field == "checks[1].feature"

        reported = await client.report_usage(
            [
                UsageEvent("ws-seed", "messages", 3, "k-1"),
                UsageEvent("ws-seed", "messages", 3, "k-1"),
            ]
        )
        assert [r.status for r in reported] == [
            UsageEventStatus.APPLIED,
            UsageEventStatus.DUPLICATE,
        ]
        assert reported[1].total == 3
        gauge = await client.set_usage("ws-seed", "users", 9)
        assert (gauge.current, gauge.level) == (9, UsageLevel.UPGRADE_PROMPT)
        usage = await client.get_usage("ws-seed")
        assert usage.metric("messages").current == 3  # type: ignore[union-attr]
        assert usage.metric("users").current == 9  # type: ignore[union-attr]


async def test_sync_client_answers_and_counts_its_calls(server: Running) -> None:
    counter = CountingInterceptor()

    def run() -> tuple[FeatureCheck, int]:
        with EntitlementsClient(
            f"127.0.0.1:{server.port}", token=TOKEN, interceptors=[counter]
        ) as client:
            check = client.can_use_feature("ws-sync", "customBranding")
            limit = client.check_limit("ws-sync", "maxUsers", 10)
            assert not limit.allowed and limit.level is UsageLevel.EXCEEDED
            return check, len(client.get_usage("ws-sync").metrics)

    check, metrics = await asyncio.to_thread(run)
    assert (check.allowed, check.upgrade_plan_id) == (False, "starter")
    assert metrics == 10
    assert counter.calls == ["CanUseFeature", "CheckLimit", "GetUsage"]


async def test_invalid_argument_names_the_field(server: Running) -> None:
    async with AsyncEntitlementsClient(f"127.0.0.1:{server.port}", token=TOKEN) as client:
        with pytest.raises(InvalidArgument) as unknown_feature:
            await client.can_use_feature("ws-1", "teleportation")
        assert unknown_feature.value.field == "feature"
        assert unknown_feature.value.reason == "ERROR_REASON_UNKNOWN_FEATURE"

        with pytest.raises(InvalidArgument) as negative:
            await client.report_usage(
                [
                    UsageEvent("ws-1", "messages", 1, "ok-1"),
                    UsageEvent("ws-1", "messages", -1, "bad-1"),
                ]
            )
        assert negative.value.field == "events[1].delta"

        with pytest.raises(InvalidArgument) as no_account:
            await client.get_entitlements("")
        assert no_account.value.field == "account_id"


async def test_sync_client_raises_invalid_argument_with_the_field(server: Running) -> None:
    def run() -> InvalidArgument:
        with EntitlementsClient(f"127.0.0.1:{server.port}", token=TOKEN) as client:
            try:
                client.check_limit("ws-1", "maxTeleports", 1)
            except InvalidArgument as exc:
                return exc
        raise AssertionError("no error")

    error = await asyncio.to_thread(run)
    assert (error.field, error.reason) == ("limit", "ERROR_REASON_UNKNOWN_LIMIT")


async def test_reused_key_with_another_payload_is_already_exists(server: Running) -> None:
    async with AsyncEntitlementsClient(f"127.0.0.1:{server.port}", token=TOKEN) as client:
        await client.report_usage([UsageEvent("ws-2", "messages", 1, "same-key")])
        with pytest.raises(AlreadyExists) as reused:
            await client.report_usage([UsageEvent("ws-2", "messages", 2, "same-key")])
        assert reused.value.reason == "ERROR_REASON_IDEMPOTENCY_KEY_REUSED"


async def test_missing_token_is_unauthenticated_and_missing_scope_permission_denied(
    server: Running,
) -> None:
    target = f"127.0.0.1:{server.port}"
    async with AsyncEntitlementsClient(target) as anonymous:
        with pytest.raises(Unauthenticated):
            await anonymous.can_use_feature("ws-3", "apiAccess")
    async with AsyncEntitlementsClient(target, token=READ_ONLY_TOKEN) as reader:
        assert not (await reader.can_use_feature("ws-3", "apiAccess")).allowed
        with pytest.raises(PermissionDenied):
            await reader.report_usage([UsageEvent("ws-3", "messages", 1, "k")])


def test_unreachable_server_raises_unavailable_after_bounded_retries() -> None:
    counter = CountingInterceptor()
    retry = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
    with EntitlementsClient(
        f"127.0.0.1:{free_port()}", retry=retry, interceptors=[counter]
    ) as client:
        start = time.monotonic()
        with pytest.raises(Unavailable):
            client.can_use_feature("ws-4", "apiAccess")
        assert time.monotonic() - start < 2.0
    assert counter.calls == ["CanUseFeature"] * 3
