"""Crypto payments on a real anvil node and a real database: a `Rig` drives quotes, transfers,
mining and the watcher deterministically (`poll()` calls the watcher's `poll_once()`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from web3.contract import AsyncContract

from adapters.chains import ChainReader, ChainSettings
from adapters.chains.payments import PaymentReads
from entitlements.crypto import CryptoPayments, CryptoSettings, PaymentWatcher, QuoteRequest
from entitlements.crypto.config import TokenConfig
from entitlements.policies import default_catalog
from entitlements.service import EntitlementService
from entitlements.store.crypto_repository import CryptoStore, PaymentRecord
from entitlements.store.migrate import upgrade
from entitlements.store.records import SubscriptionInterval, utcnow
from entitlements.store.repository import Store
from entitlements.watch import WatchHub
from tests.chain_fixtures import (
    AnvilNode,
    ChainKit,
    TestTokens,
    anvil,
    chain,
    local_settings,
    new_wallet,
    tokens,
)

__all__ = ["anvil", "chain", "tokens"]

DEPTH = 3
ETH_USD = Decimal("2500")


def crypto_settings(deployed: TestTokens, pay_to: str, **overrides: Any) -> CryptoSettings:
    """USDC is the 6-decimal test token and USDT the 18-decimal one (as on BSC)."""
    values: dict[str, Any] = {
        "pay_to_address": pay_to,
        "tokens": {
            ("local", "USDC"): TokenConfig(deployed.usdc6.address),
            ("local", "USDT"): TokenConfig(deployed.token18.address),
        },
        "confirmations": {"local": DEPTH},
        "eth_usd_price": ETH_USD,
        "poll_interval_seconds": 0.05,
    }
    values.update(overrides)
    return CryptoSettings(**values)


@dataclass
class Rig:
    kit: ChainKit
    tokens: TestTokens
    store: Store
    service: EntitlementService
    payments: CryptoPayments
    watcher: PaymentWatcher
    reader: ChainReader
    pay_to: str
    clock_offset: timedelta = field(default=timedelta(0))
    _minted: set[str] = field(default_factory=set)

    @property
    def repo(self) -> CryptoStore:
        return self.payments.repo

    def now(self) -> datetime:
        return utcnow() + self.clock_offset

    async def quote(
        self,
        currency: str = "USDC",
        *,
        account: str = "acme",
        plan: str = "pro",
        interval: SubscriptionInterval = "month",
    ) -> PaymentRecord:
        return await self.payments.create(QuoteRequest(account, plan, interval, "local", currency))

    def token(self, currency: str) -> AsyncContract:
        return self.tokens.usdc6 if currency == "USDC" else self.tokens.token18

    async def pay(self, payment: PaymentRecord, value: int | None = None) -> str:
        """Send `value` base units (default: the quoted amount) to the receiving address."""
        value = int(payment.amount_base_units) if value is None else value
        if payment.currency == "ETH":
            tx = await self.kit.w3.eth.send_transaction(
                {"from": self.kit.deployer, "to": self.pay_to, "value": value}  # type: ignore[typeddict-item]
            )
            await self.kit.w3.eth.wait_for_transaction_receipt(tx)
            return "0x" + bytes(tx).hex().removeprefix("0x")
        return await self.send_token(self.token(payment.currency), value)

    async def send_token(self, token: AsyncContract, value: int) -> str:
        await self.kit.transact(token.functions.mint(self.kit.deployer, value))
        tx = await token.functions.transfer(self.pay_to, value).transact(
            {"from": self.kit.deployer}
        )
        receipt = await self.kit.w3.eth.wait_for_transaction_receipt(tx)
        assert receipt["status"] == 1
        return "0x" + bytes(tx).hex().removeprefix("0x")

    async def mine(self, blocks: int = 1) -> None:
        await self.kit.w3.provider.make_request("anvil_mine", [hex(blocks)])  # type: ignore[arg-type]

    async def snapshot(self) -> str:
        response = await self.kit.w3.provider.make_request("evm_snapshot", [])  # type: ignore[arg-type]
        return str(response["result"])

    async def revert(self, snapshot: str) -> None:
        response = await self.kit.w3.provider.make_request("evm_revert", [snapshot])  # type: ignore[arg-type]
        assert response["result"] is True

    async def poll(self) -> None:
        await self.watcher.catch_up()

    async def get(self, payment: PaymentRecord) -> PaymentRecord:
        return await self.payments.get(payment.id)

    async def plan_of(self, account: str) -> str:
        return (await self.service.get(account)).plan_id

    def new_watcher(self) -> PaymentWatcher:
        return PaymentWatcher(self.payments, "local")


async def make_rig(
    anvil: AnvilNode,
    chain: ChainKit,
    deployed: TestTokens,
    store: Store,
    **overrides: Any,
) -> tuple[Rig, Callable[[], Any]]:
    chains: ChainSettings = local_settings(anvil)
    pay_to = new_wallet().address
    settings = crypto_settings(deployed, pay_to, **overrides)
    reader = ChainReader("local", anvil.chain_id, anvil.url, timeout_seconds=5)
    await reader.connect()
    catalog = default_catalog()
    rig_ref: list[Rig] = []

    def clock() -> datetime:
        return rig_ref[0].now()

    service = EntitlementService(store, catalog, WatchHub(), clock=clock)
    payments = CryptoPayments(
        CryptoStore(store.engine),
        service,
        catalog,
        chains,
        settings,
        {"local": PaymentReads(reader)},
        clock=clock,
    )
    rig = Rig(
        kit=chain,
        tokens=deployed,
        store=store,
        service=service,
        payments=payments,
        watcher=PaymentWatcher(payments, "local"),
        reader=reader,
        pay_to=pay_to,
    )
    rig_ref.append(rig)

    async def close() -> None:
        await rig.watcher.stop()
        await reader.close()

    return rig, close


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'crypto.db'}"
    await upgrade(url)
    opened = Store.open(url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def rig(
    anvil: AnvilNode, chain: ChainKit, tokens: TestTokens, sqlite_store: Store
) -> AsyncIterator[Rig]:
    """Crypto payments on SQLite and the session's anvil node, with a fresh receiving address."""
    made, close = await make_rig(anvil, chain, tokens, sqlite_store)
    try:
        yield made
    finally:
        await close()
