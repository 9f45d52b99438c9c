"""Stripe's reachability is reported apart from readiness (/readyz?verbose, /metrics): from the
billing adapter's own calls, and a probe at most once per STRIPE_PROBE_INTERVAL_SECONDS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from nchat.entitlements.v1 import billing_service_pb2_grpc

from entitlements.store.repository import Store
from tests.billing.conftest import PRICES, stripe_env
from tests.billing.helpers import checkout_request
from tests.observability.conftest import Ops, ops_settings, start_ops, stop_ops
from tests.server.conftest import OPS
from tests.stripe_double import StripeDouble

ADMIN = {"Authorization": "Bearer ops-token-0000000000001"}


@pytest.fixture
async def double() -> AsyncIterator[StripeDouble]:
    stripe = StripeDouble()
    await stripe.start()
    for (_, interval), (price_id, amount) in PRICES.items():
        stripe.add_price(price_id, amount=amount, interval=interval)
    try:
        yield stripe
    finally:
        await stripe.stop()


async def _stripe(ops: Ops, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    status, body, _ = await ops.get("/readyz?verbose", headers)
    answer = json.loads(body)
    assert answer["status"] == "ready"  # Stripe never decides readiness
    stripe: dict[str, Any] = answer["dependencies"]["stripe"]
    assert stripe["required"] is False
    return status, stripe


async def _metric(ops: Ops) -> str:
    _, metrics, _ = await ops.get("/metrics")
    return next(
        line
        for line in metrics.splitlines()
        if line.startswith('entitlements_dependency_up{dependency="stripe"}')
    )


async def test_stripe_down_shows_in_verbose_readiness_and_metrics_while_readyz_stays_200(
    tmp_path: Path, sqlite_store: Store, double: StripeDouble
) -> None:
    settings = ops_settings(tmp_path, **stripe_env(double.url, STRIPE_PROBE_INTERVAL_SECONDS="1"))
    ops = await start_ops(settings, sqlite_store)
    try:
        status, stripe = await _stripe(ops)
        assert (status, stripe["state"]) == (200, "ok")
        assert await _metric(ops) == 'entitlements_dependency_up{dependency="stripe"} 1.0'

        double.outage = True  # Stripe answers 500 to everything
        await asyncio.sleep(1.1)
        status, stripe = await _stripe(ops)
        assert (status, stripe["state"]) == (200, "down")
        assert "detail" not in stripe  # error texts are for admins
        _, stripe = await _stripe(ops, ADMIN)
        assert stripe["state"] == "down" and "500" in stripe["detail"]
        assert await _metric(ops) == 'entitlements_dependency_up{dependency="stripe"} 0.0'

        double.outage = False
        await asyncio.sleep(1.1)
        status, stripe = await _stripe(ops)
        assert (status, stripe["state"]) == (200, "ok")

        await double.stop()  # nothing listens any more
        await asyncio.sleep(1.1)
        status, stripe = await _stripe(ops)
        assert (status, stripe["state"]) == (200, "down")
    finally:
        await stop_ops(ops)


async def test_readiness_checks_do_not_hammer_stripe(
    tmp_path: Path, sqlite_store: Store, double: StripeDouble
) -> None:
    settings = ops_settings(
        tmp_path, **stripe_env(double.url, STRIPE_PROBE_INTERVAL_SECONDS="3600")
    )
    ops = await start_ops(settings, sqlite_store)
    try:
        for _ in range(20):
            status, stripe = await _stripe(ops)
            assert (status, stripe["state"]) == (200, "ok")
        assert len(double.requests) == 1  # one probe, then its answer is reused
    finally:
        await stop_ops(ops)


async def test_a_failed_call_to_stripe_shows_without_waiting_for_the_next_probe(
    tmp_path: Path, sqlite_store: Store, double: StripeDouble
) -> None:
    settings = ops_settings(
        tmp_path, **stripe_env(double.url, STRIPE_PROBE_INTERVAL_SECONDS="3600")
    )
    ops = await start_ops(settings, sqlite_store)
    try:
        _, stripe = await _stripe(ops)
        assert stripe["state"] == "ok"
        double.outage = True
        async with grpc.aio.insecure_channel(ops.grpc_target) as channel:
            billing = billing_service_pb2_grpc.BillingServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await billing.CreateCheckoutSession(checkout_request("ws-r"), metadata=OPS)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
            probes = len(double.requests)
            _, stripe = await _stripe(ops)
            assert stripe["state"] == "down"
            assert stripe["last_failure_seconds_ago"] < 5
            assert len(double.requests) == probes  # known from the call, no probe
            double.outage = False
            await billing.CreateCheckoutSession(checkout_request("ws-r"), metadata=OPS)
            _, stripe = await _stripe(ops)
            assert stripe["state"] == "ok"
    finally:
        await stop_ops(ops)
