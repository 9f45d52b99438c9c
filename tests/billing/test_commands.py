"""`entitlements serve` runs the webhook shim beside gRPC; `entitlements reconcile stripe`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.billing.conftest import WEBHOOK_SECRET, stripe_env
from tests.server.test_process import free_port
from tests.stripe_double import StripeDouble, WebhookSender, event

pytestmark = pytest.mark.slow

ENTITLEMENTS = [sys.executable, "-m", "entitlements.cli"]


@pytest.fixture
async def env(tmp_path: Path, stripe_double: StripeDouble) -> AsyncIterator[dict[str, str]]:
    env = {
        **os.environ,
        "ENTITLEMENTS_DEV_MODE": "1",
        "ENTITLEMENTS_GRPC_ADDR": f"127.0.0.1:{free_port()}",
        "ENTITLEMENTS_HTTP_ADDR": f"127.0.0.1:{free_port()}",
        "ENTITLEMENTS_DATABASE_URL": f"sqlite:///{tmp_path / 'entitlements.db'}",
        **stripe_env(stripe_double.url),
    }
    assert (await run(env, tmp_path, "migrate"))[0] == 0
    yield env


async def run(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *ENTITLEMENTS,
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, out.decode(), err.decode()


async def wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer")
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("command", ["serve", "webhooks"])
async def test_the_webhook_shim_answers_and_stops_on_sigterm(
    env: dict[str, str], tmp_path: Path, command: str
) -> None:
    base = f"http://{env['ENTITLEMENTS_HTTP_ADDR']}"
    process = await asyncio.create_subprocess_exec(
        *ENTITLEMENTS, command, env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
    )
    try:
        await wait_healthy(f"{base}/healthz")
        sender = WebhookSender(f"{base}/webhooks/stripe", WEBHOOK_SECRET)
        status, body = await sender.post(event("customer.created", {"id": "cus_1"}))
        assert (status, body["outcome"]) == (200, "ignored")
        assert (await sender.post(b"{}", secrets=["whsec_wrong"]))[0] == 400
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, err.decode()


async def test_reconcile_command_prints_what_it_repaired_and_a_second_run_nothing(
    env: dict[str, str], tmp_path: Path, stripe_double: StripeDouble
) -> None:
    customer = stripe_double.add_customer()
    stripe_double.add_subscription(
        customer["id"], "price_pro_monthly", metadata={"account_id": "acct-cli"}
    )

    code, first, err = await run(env, tmp_path, "reconcile", "stripe")
    again_code, second, _ = await run(env, tmp_path, "reconcile", "stripe")

    assert code == 0, err
    assert "repaired: 1" in first.splitlines()
    assert again_code == 0 and "repaired: 0" in second.splitlines()


async def test_reconcile_without_stripe_is_a_configuration_error(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ENTITLEMENTS_DATABASE_URL": f"sqlite:///{tmp_path / 'e.db'}",
        "STRIPE_SECRET_KEY": "",
    }
    assert (await run(env, tmp_path, "migrate"))[0] == 0

    code, _, err = await run(env, tmp_path, "reconcile", "stripe")

    assert code == 2 and "STRIPE_SECRET_KEY" in err
