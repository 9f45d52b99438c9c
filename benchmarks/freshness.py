"""Freshness: how long a change takes to reach the answers (issue 14's table), measured from
outside on two `entitlements serve` replicas sharing PostgreSQL, with a real anvil node and the
local Stripe double, every freshness setting at its default.

    .venv/bin/python -m benchmarks.freshness [--samples N]

Each row is timed from the moment the change is final where it happens (the webhook's 200, the
admin RPC's answer, the block mined: just before the transaction or `anvil_mine` is sent) to the
sending of the first check that shows it, checks being asked back to back (so a check's own
round trip is not counted as staleness; the resolution is one round trip); for a watch stream,
to the message's arrival. Replica A takes the writes; B is the other replica.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from nchat.entitlements.client import AsyncEntitlementsClient
from nchat.entitlements.v1 import admin_service_pb2 as admin_pb
from nchat.entitlements.v1 import admin_service_pb2_grpc as admin_grpc
from nchat.entitlements.v1 import billing_service_pb2_grpc as billing_grpc
from nchat.entitlements.v1 import crypto_payment_service_pb2 as crypto_pb
from nchat.entitlements.v1 import crypto_payment_service_pb2_grpc as crypto_grpc
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as ent_grpc
from nchat.entitlements.v1 import plan_pb2
from nchat.entitlements.v1 import token_gate_service_pb2 as gate_pb
from nchat.entitlements.v1 import token_gate_service_pb2_grpc as gate_grpc

from benchmarks.databases import POSTGRES_URL, drop_postgres_database, fresh_postgres_database
from benchmarks.harness import Server
from tests.billing.conftest import PRICES, WEBHOOK_SECRET, stripe_env
from tests.billing.helpers import checkout_request
from tests.chain_fixtures import AnvilNode, ChainKit, new_wallet
from tests.stripe_double import StripeDouble, WebhookSender, event

#: A change not seen within this long counts as missed (and as this long in the figures).
GIVE_UP_SECONDS = 15.0
CHANNEL = "fresh-holders"


@dataclass
class Row:
    """One line of the table: samples in seconds, against a p99 target in seconds."""

    change: str
    reaches: str
    target_seconds: float
    samples: list[float] = field(default_factory=list)
    missed: int = 0

    def add(self, seconds: float | None) -> None:
        if seconds is None:
            self.missed += 1
            seconds = GIVE_UP_SECONDS
        self.samples.append(max(0.0, seconds))

    def pct(self, p: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")

    @property
    def met(self) -> bool:
        return bool(self.samples) and self.missed == 0 and self.pct(0.99) < self.target_seconds

    def line(self) -> str:
        return (
            f"{self.change:<44} -> {self.reaches:<44} p50 {_ms(self.pct(0.5)):>9}"
            f"  p99 {_ms(self.pct(0.99)):>9}  (n={len(self.samples)}"
            f"{f', {self.missed} missed' if self.missed else ''})"
            f"  target p99 < {_ms(self.target_seconds)}: {'met' if self.met else 'MISSED'}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "change": self.change,
            "reaches": self.reaches,
            "samples": len(self.samples),
            "missed": self.missed,
            "p50_ms": round(self.pct(0.5) * 1000, 1),
            "p99_ms": round(self.pct(0.99) * 1000, 1),
            "max_ms": round(max(self.samples, default=float("nan")) * 1000, 1),
            "mean_ms": round(statistics.fmean(self.samples) * 1000, 1) if self.samples else None,
            "target_p99_ms": self.target_seconds * 1000,
            "met": self.met,
        }


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


async def until(
    check: Callable[[], Awaitable[bool]], since: float, pause: float = 0.0
) -> float | None:
    """Seconds from `since` (perf_counter) until the first `check()` that comes back true was
    sent (its own round trip is not staleness); None after GIVE_UP_SECONDS."""
    while True:
        asked = time.perf_counter()
        if await check():
            return asked - since
        if time.perf_counter() - since > GIVE_UP_SECONDS:
            return None
        await asyncio.sleep(pause)


async def latest(*values: Awaitable[float | None]) -> float | None:
    """The slowest of several waits (None if any gave up)."""
    results = await asyncio.gather(*values)
    return None if any(r is None for r in results) else max(r for r in results if r is not None)


@dataclass
class Rig:
    a: Server
    b: Server
    to_a: grpc.aio.Channel
    to_b: grpc.aio.Channel
    double: StripeDouble
    kit: ChainKit
    webhooks: WebhookSender

    def ent(self, channel: grpc.aio.Channel) -> ent_grpc.EntitlementsServiceStub:
        return ent_grpc.EntitlementsServiceStub(channel)

    def allowed(
        self, channel: grpc.aio.Channel, account: str, feature: str
    ) -> Callable[[], Awaitable[bool]]:
        stub = self.ent(channel)
        request = ent_pb.CanUseFeatureRequest(account_id=account, feature=feature)

        async def check() -> bool:
            return bool((await stub.CanUseFeature(request, timeout=5)).allowed)

        return check


async def stripe_rows(rig: Rig, samples: int) -> tuple[Row, Row]:
    same = Row("Stripe webhook 200", "the same replica (CanUseFeature)", 0.050)
    other = Row("Stripe webhook 200 on replica A", "replica B (CanUseFeature)", 0.100)
    billing = billing_grpc.BillingServiceStub(rig.to_a)
    for i in range(samples):
        account = f"fresh-stripe-{uuid.uuid4().hex[:8]}-{i}"
        answer = await billing.CreateCheckoutSession(checkout_request(account, "starter"))
        session, _ = rig.double.complete_checkout(answer.session_id, payment_status="paid")
        status, body = await rig.webhooks.post(event("checkout.session.completed", session))
        t0 = time.perf_counter()
        assert status == 200, body
        on_a, on_b = await asyncio.gather(
            until(rig.allowed(rig.to_a, account, "customBranding"), t0),
            until(rig.allowed(rig.to_b, account, "customBranding"), t0),
        )
        same.add(on_a)
        other.add(on_b)
    return same, other


async def override_row(rig: Rig, samples: int) -> Row:
    row = Row(
        "override (SetAccountOverrides) on replica A", "a local-evaluation client of B", 0.100
    )
    admin = admin_grpc.AdminServiceStub(rig.to_a)
    async with AsyncEntitlementsClient(rig.b.target, local_evaluation=True) as client:
        for i in range(samples):
            account = f"fresh-override-{uuid.uuid4().hex[:8]}-{i}"
            first = await client.can_use_feature(account, "advancedAnalytics")
            assert not first.allowed
            deadline = time.monotonic() + 10
            while (await client.can_use_feature(account, "advancedAnalytics")).source != "local":
                assert time.monotonic() < deadline, "the client never answered locally"
                await asyncio.sleep(0.01)
            await admin.SetAccountOverrides(
                admin_pb.SetAccountOverridesRequest(
                    overrides=admin_pb.AccountOverrides(
                        account_id=account, granted_features=["advancedAnalytics"], reason="bench"
                    )
                )
            )
            t0 = time.perf_counter()

            async def local_allows(account: str = account) -> bool:
                answer = await client.can_use_feature(account, "advancedAnalytics")
                return answer.allowed and answer.source == "local"

            # A short pause between local checks: the client's watch stream shares this loop.
            row.add(await until(local_allows, t0, pause=0.0005))
    return row


async def crypto_rows(rig: Rig, samples: int) -> tuple[Row, Row]:
    """Two ways the confirming block comes: after the watcher has read the payment's block (as on
    any chain whose block time exceeds a watcher poll, 0.1-0.3 s here), and mined at once after
    the payment's block (the poll that block woke is still running: one more poll's wait)."""
    seen = Row("crypto payment's confirming block", "CanUseFeature true on both replicas", 1.0)
    at_once = Row(
        "  the same, mined right after the payment's", "CanUseFeature true on both replicas", 1.0
    )
    for i in range(2 * samples):
        row = seen if i % 2 == 0 else at_once
        row.add(await _pay_and_confirm(rig, f"fresh-pay-{uuid.uuid4().hex[:8]}-{i}", row is seen))
    return seen, at_once


async def _pay_and_confirm(rig: Rig, account: str, wait_until_seen: bool) -> float | None:
    payments = crypto_grpc.CryptoPaymentServiceStub(rig.to_a)
    w3 = rig.kit.w3
    created = await payments.CreateCryptoPayment(
        crypto_pb.CreateCryptoPaymentRequest(
            account_id=account,
            plan_id="pro",
            interval=plan_pb2.BILLING_INTERVAL_MONTH,
            network="local",
            currency="ETH",
        )
    )
    payment = created.payment
    tx = await w3.eth.send_transaction(
        {
            "from": rig.kit.deployer,
            "to": payment.pay_to_address,  # type: ignore[typeddict-item]
            "value": int(payment.amount_base_units),
        }
    )
    await w3.eth.wait_for_transaction_receipt(tx)
    if wait_until_seen:
        ask = crypto_pb.GetCryptoPaymentRequest(payment_id=payment.payment_id)
        deadline = time.monotonic() + GIVE_UP_SECONDS
        while (await payments.GetCryptoPayment(ask)).payment.status != (
            crypto_pb.CRYPTO_PAYMENT_STATUS_PROCESSING
        ):
            assert time.monotonic() < deadline, "the watcher never saw the payment"
            await asyncio.sleep(0.01)
    # The payment's block counts as its first confirmation: the rest in one go, so the
    # confirming block is mined at t0 whichever way the depth is counted.
    t0 = time.perf_counter()
    await w3.provider.make_request(
        "anvil_mine",  # type: ignore[arg-type]
        [hex(max(1, payment.required_confirmations))],
    )
    on_a, on_b = await asyncio.gather(
        until(rig.allowed(rig.to_a, account, "advancedAnalytics"), t0),
        until(rig.allowed(rig.to_b, account, "advancedAnalytics"), t0),
    )
    return None if on_a is None or on_b is None else max(on_a, on_b)


@dataclass
class Watched:
    """The token_access_changed messages a replica's watch stream delivered, by wallet."""

    revoked_at: dict[str, float] = field(default_factory=dict)


async def _watch(channel: grpc.aio.Channel, watched: Watched, ready: asyncio.Event) -> None:
    stream = ent_grpc.EntitlementsServiceStub(channel).WatchEntitlements(
        ent_pb.WatchEntitlementsRequest(channel_ids=[CHANNEL])
    )
    ready.set()
    async for message in stream:
        if message.HasField("token_access_changed"):
            change = message.token_access_changed
            if not change.granted:
                for wallet in change.wallet_addresses:
                    watched.revoked_at.setdefault(wallet.lower(), time.perf_counter())


async def token_rows(rig: Rig, samples: int) -> tuple[Row, Row]:
    deny = Row("an NFT transferred away", "CheckChannelAccess (A) + VerifyToken (B) deny", 1.0)
    pushed = Row(
        "an NFT transferred away, nobody asks", "token_access_changed on both replicas", 1.0
    )
    nft = await rig.kit.deploy("TestERC721")
    requirement = gate_pb.TokenRequirement(
        channel_id=CHANNEL,
        token_type=gate_pb.TOKEN_TYPE_ERC721,
        contract_address=nft.address,
        network="local",
        name="holders",
        enabled=True,
    )
    gate_a = gate_grpc.TokenGateServiceStub(rig.to_a)
    gate_b = gate_grpc.TokenGateServiceStub(rig.to_b)
    await gate_a.CreateTokenRequirement(
        gate_pb.CreateTokenRequirementRequest(requirement=requirement)
    )
    on_a, on_b = Watched(), Watched()
    ready_a, ready_b = asyncio.Event(), asyncio.Event()
    watches = [
        asyncio.create_task(_watch(rig.to_a, on_a, ready_a)),
        asyncio.create_task(_watch(rig.to_b, on_b, ready_b)),
    ]
    await ready_a.wait()
    await ready_b.wait()
    await asyncio.sleep(0.3)  # the streams are open on the servers
    inline = gate_pb.TokenRequirement(
        token_type=gate_pb.TOKEN_TYPE_ERC721, contract_address=nft.address, network="local"
    )
    try:
        for i in range(2 * samples):
            asking = i % 2 == 0
            holder = new_wallet().address
            token_id = int(uuid.uuid4().int % 2**63)
            await rig.kit.transact(nft.functions.mint(holder, token_id))
            ask = gate_pb.CheckChannelAccessRequest(channel_id=CHANNEL, wallet_addresses=[holder])
            verify = gate_pb.VerifyTokenRequest(requirement=inline, wallet_address=holder)
            assert (await gate_a.CheckChannelAccess(ask)).granted
            assert (await gate_b.VerifyToken(verify)).verified
            await rig.kit.fund(holder)
            await rig.kit.impersonate(holder)
            t0 = time.perf_counter()
            await nft.functions.transferFrom(holder, new_wallet().address, token_id).transact(
                {"from": holder}
            )

            if asking:

                async def denied_a(ask: Any = ask) -> bool:
                    return not (await gate_a.CheckChannelAccess(ask, timeout=5)).granted

                async def denied_b(verify: Any = verify) -> bool:
                    return not (await gate_b.VerifyToken(verify, timeout=5)).verified

                deny.add(await latest(until(denied_a, t0), until(denied_b, t0)))
            else:
                wallet = holder.lower()

                async def heard(where: Watched, wallet: str = wallet) -> bool:
                    return wallet in where.revoked_at

                async def both() -> bool:
                    return await heard(on_a) and await heard(on_b)

                if await until(both, t0, pause=0.01) is None:
                    pushed.add(None)
                else:
                    pushed.add(max(on_a.revoked_at[wallet], on_b.revoked_at[wallet]) - t0)
    finally:
        for task in watches:
            task.cancel()
        await asyncio.gather(*watches, return_exceptions=True)
    return deny, pushed


async def bench_freshness(
    samples: int = 40, only: frozenset[str] = frozenset()
) -> dict[str, Any] | None:
    """Every row of the freshness table (`samples` changes per row; the crypto and token rows
    take three quarters as many, as each costs blocks), or only the groups named in `only`
    (stripe, override, crypto, token). None without PostgreSQL."""
    name = f"entitlements_fresh_{uuid.uuid4().hex[:8]}"
    database = await fresh_postgres_database(name)
    if database is None:
        print(f"freshness: PostgreSQL not reachable at {POSTGRES_URL}; skipped", flush=True)
        return None
    double = StripeDouble()
    node: AnvilNode | None = None
    kit: ChainKit | None = None
    try:
        await double.start()
        for (_, interval), (price_id, amount) in PRICES.items():
            double.add_price(price_id, amount=amount, interval=interval)
        node = AnvilNode().start()
        kit = await ChainKit.connect(node)
        env = {
            **stripe_env(double.url),
            "ENTITLEMENTS_RPC_URL_LOCAL": node.url,
            "NEXT_PUBLIC_PAYMENT_WALLET_ADDRESS": new_wallet().address,
            "ENTITLEMENTS_ETH_USD_PRICE": "2500",
            "ENTITLEMENTS_LOG_LEVEL": "WARNING",
        }
        with Server(database, **env) as a, Server(database, **env) as b:
            http_a = a.env["ENTITLEMENTS_HTTP_ADDR"]
            async with (
                grpc.aio.insecure_channel(a.target) as to_a,
                grpc.aio.insecure_channel(b.target) as to_b,
            ):
                rig = Rig(
                    a,
                    b,
                    to_a,
                    to_b,
                    double,
                    kit,
                    WebhookSender(f"http://{http_a}/webhooks/stripe", WEBHOOK_SECRET),
                )
                rows: list[Row] = []
                started = time.perf_counter()
                measures: dict[str, Callable[[], Awaitable[Row | tuple[Row, Row]]]] = {
                    "stripe": lambda: stripe_rows(rig, samples),
                    "override": lambda: override_row(rig, samples),
                    "crypto": lambda: crypto_rows(rig, max(10, samples * 3 // 4)),
                    "token": lambda: token_rows(rig, max(10, samples * 3 // 4)),
                }
                for key, measure in measures.items():
                    if only and key not in only:
                        continue
                    measured = await measure()
                    for row in measured if isinstance(measured, tuple) else (measured,):
                        print(row.line(), flush=True)
                        rows.append(row)
                elapsed = time.perf_counter() - started
        print(f"freshness: measured in {elapsed:.0f} s, defaults, two replicas on PostgreSQL")
        return {"seconds": round(elapsed, 1), "rows": [r.as_dict() for r in rows]}
    finally:
        if kit is not None:
            await kit.close()
        if node is not None:
            node.stop()
        await double.stop()
        await drop_postgres_database(name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.freshness")
    parser.add_argument("--samples", type=int, default=40, help="changes per row")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        choices=["stripe", "override", "crypto", "token"],
        help="measure only these rows (repeatable)",
    )
    args = parser.parse_args()
    outcome = asyncio.run(bench_freshness(args.samples, frozenset(args.only)))
    if outcome is not None:
        print(json.dumps(outcome, indent=2))
