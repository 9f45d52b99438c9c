"""The crypto simulation's world: its constants, the payment code wired to a simulated chain
and a real store for one seed, and the crash it can inject (see test_crypto_simulation.py)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from eth_utils.address import to_checksum_address
from sqlalchemy import event
from web3 import AsyncWeb3

from adapters.chains import ChainReader, ChainSettings
from adapters.chains.payments import PaymentReads
from entitlements.crypto import CryptoPayments, CryptoSettings, PaymentWatcher
from entitlements.crypto.config import TokenConfig
from entitlements.crypto.funds import UnsettledFunds
from entitlements.policies import default_catalog
from entitlements.service import EntitlementService
from entitlements.store import models
from entitlements.store.crypto_funds_repository import FundsStore
from entitlements.store.crypto_repository import (
    CryptoStore,
    PaymentRecord,
)
from entitlements.store.repository import Store
from entitlements.watch import WatchHub
from tests.simulation.chain_sim import SimChain, SimProvider
from tests.simulation.seeds import Trace

CHAIN_ID = 31337
DEPTH = 3
#: The deepest reorg simulated: past the confirmation depth, so activations get revoked.
MAX_REORG = DEPTH + 1
TTL = 900
LATE = 1800
TOLERANCE_CENTS = 100
PAY_TO = to_checksum_address("0x" + "70" * 20)
USDC = to_checksum_address("0x" + "a6" * 20)  # 6 decimals
USDT = to_checksum_address("0x" + "b1" * 20)  # 18 decimals (as on BSC)
FAKE = to_checksum_address("0x" + "fa" * 20)  # calls itself USDC; never configured
TOKENS = {"USDC": USDC, "USDT": USDT}
DECIMALS: dict[str, int] = {"USDC": 6, "USDT": 18, "ETH": 18}
ACCOUNTS = ("a0", "a1", "a2", "a3")
WALLETS = tuple(to_checksum_address("0x" + f"{i:02x}" * 20) for i in range(0x11, 0x15))
STRANGER = to_checksum_address("0x" + "5e" * 20)
START = datetime(2026, 11, 1, tzinfo=UTC)
STEPS = 6
FAR = datetime(9000, 1, 1, tzinfo=UTC)
#: Tables a seed writes, children first: emptied between seeds.
TABLES = (
    models.CryptoResolution,
    models.CryptoRevenue,
    models.CryptoTransferRow,
    models.CryptoUnmatchedTransfer,
    models.CryptoWatchCursor,
    models.CryptoPaymentRow,
    models.EntitlementChange,
    models.OverrideAudit,
    models.Subscription,
    models.Account,
)


class Violation(AssertionError):
    """An invariant does not hold."""


class SeedFailed(Exception):
    """A seed failed; the message is its replayable trace."""

    def __init__(self, seed: int, trace: str) -> None:
        super().__init__(trace)
        self.seed = seed


def settings() -> CryptoSettings:
    return CryptoSettings(
        pay_to_address=PAY_TO,
        tokens={("local", c): TokenConfig(a, DECIMALS[c]) for c, a in TOKENS.items()},
        confirmations={"local": DEPTH},
        eth_usd_price=Decimal("2500"),
        quote_ttl_seconds=TTL,
        late_window_seconds=LATE,
        max_blocks_per_poll=4,  # catch-ups take several polls: restarts land mid-way
        overpay_tolerance_cents=TOLERANCE_CENTS,
    )


@dataclass
class World:
    """One seed: a simulated chain, the real payment code on the shared store, and the trace."""

    seed: int
    store: Store
    rng: random.Random
    trace: Trace
    chain: SimChain
    reader: ChainReader
    payments: CryptoPayments
    watcher: PaymentWatcher
    funds: UnsettledFunds
    crasher: Crasher
    now: datetime = START
    quotes: list[PaymentRecord] = field(default_factory=list)
    #: The chain changed since the watcher last caught up.
    dirty: bool = True

    @property
    def repo(self) -> CryptoStore:
        return self.payments.repo

    def clock(self) -> datetime:
        return self.now

    def tick(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    def stamp(self) -> int:
        return int(self.now.timestamp())


async def make_world(seed: int, store: Store, crasher: Crasher) -> World:
    chain = SimChain(CHAIN_ID, {USDC: 6, USDT: 18})
    reader = ChainReader("local", CHAIN_ID, "sim://chain", timeout_seconds=5)
    provider = SimProvider(chain)
    # The adapter's own code over the simulated node: only the transport is swapped.
    reader._provider = provider  # type: ignore[assignment]
    reader.w3 = AsyncWeb3(provider)  # type: ignore[arg-type]
    world_ref: list[World] = []
    catalog = default_catalog()
    service = EntitlementService(store, catalog, WatchHub(), clock=lambda: world_ref[0].now)
    payments = CryptoPayments(
        CryptoStore(store.engine),
        service,
        catalog,
        ChainSettings(rpc_urls={"local": "sim://chain"}, local_chain_id=CHAIN_ID),
        settings(),
        {"local": PaymentReads(reader)},
        clock=lambda: world_ref[0].now,
    )
    world = World(
        seed=seed,
        store=store,
        rng=random.Random(seed),
        trace=Trace("crypto", seed),
        chain=chain,
        reader=reader,
        payments=payments,
        watcher=PaymentWatcher(payments, "local"),
        funds=UnsettledFunds(payments, FundsStore(store.engine)),
        crasher=crasher,
    )
    world_ref.append(world)
    return world


class SimulatedCrash(Exception):
    """The process died: raised in place of the k-th database statement of a step."""


class Crasher:
    """Kills a step at its k-th database statement (the statement never runs, its transaction
    rolls back), as a process dying mid-step would; deterministic, unlike a timer."""

    def __init__(self, store: Store) -> None:
        self.countdown = 0
        event.listen(store.engine.sync_engine, "before_cursor_execute", self._statement)

    def _statement(self, *args: Any) -> None:
        if self.countdown > 0:
            self.countdown -= 1
            if self.countdown == 0:
                raise SimulatedCrash("the process died here")


def _crashed(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, SimulatedCrash):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False
