"""A deterministic, seeded simulation of crypto payments: the REAL payment code (quotes, the
watcher, settling, activation through EntitlementService, the admin's unsettled-funds listing
and resolutions, revenue analytics) on a real store (SQLite and PostgreSQL), against a
simulated chain the real adapter reads through web3's provider interface (tests/simulation/
chain_sim.py), driven through random payments (exact, short, long, late, in the wrong
currency, from the wrong wallet, in a fake token, batched), reorgs that drop transactions or
re-mine them at other positions, clock jumps, watcher restarts part-way through a catch-up,
crashes at a random database statement of a catch-up (mid-block, mid-activation), and admin
resolutions (credit or refund).

The model is the simulated chain itself (what is on the canonical chain, at which depth) plus
the quotes made. After every step that runs the service's code (the other steps change only the
chain or the clock; right after a crash the service is down until the next step restarts it):
- no transfer is counted twice: each payment's received total is the sum of its own live
  transfers; revenue facts are one per settled payment;
- an account has a paid plan exactly when a settled, unreversed payment (or an admin credit)
  grants it; crypto revenue, as analytics reports it, is the sum of settled payments' prices;
and once the watcher has caught up with the chain:
- every live transfer row is on the canonical chain, every canonical transfer the watcher has
  read has exactly one row, a matched one is in its quote's currency, carries its digits and
  comes from its payer (when the quote names one);
- a payment's status is what the canonical chain says (recomputed here from the chain);
- every transfer at the confirmation depth either settles its one quote or is listed by
  ListUnsettledFunds (or was resolved by an admin).

A failing seed prints its steps and how to replay it (`Trace.failure`).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import delete

from entitlements.crypto import PaymentWatcher, QuoteRequest
from entitlements.crypto.amounts import scheme_for
from entitlements.crypto.funds import Credit, Refund
from entitlements.errors import FailedPrecondition
from entitlements.store.crypto_repository import (
    PaymentRecord,
)
from entitlements.store.migrate import upgrade
from entitlements.store.repository import Store
from tests.conftest import PostgresServer
from tests.simulation.chain_sim import Log, SimTx
from tests.simulation.crypto_invariants import (
    verify,
)
from tests.simulation.crypto_world import (
    ACCOUNTS,
    DECIMALS,
    DEPTH,
    FAKE,
    LATE,
    MAX_REORG,
    PAY_TO,
    STEPS,
    STRANGER,
    TABLES,
    TOKENS,
    TTL,
    USDC,
    WALLETS,
    Crasher,
    SeedFailed,
    Violation,
    World,
    _crashed,
    make_world,
)
from tests.simulation.seeds import seeds

# -- actions --


async def quote(w: World) -> None:
    account = w.rng.choice(ACCOUNTS)
    currency = w.rng.choice(("USDC", "USDT", "ETH"))
    payer = w.rng.choice(WALLETS) if w.rng.random() < 0.5 else None
    try:
        made = await w.payments.create(
            QuoteRequest(account, "pro", "month", "local", currency, payer_address=payer)
        )
    except FailedPrecondition:
        return
    w.quotes.append(made)
    w.trace.step(
        f"quote {made.id} {account} {currency} slot {made.slot} amount "
        f"{made.amount_base_units} payer {payer}"
    )


def _value_for(w: World, q: PaymentRecord, variant: str, currency: str) -> int:
    amount = int(q.amount_base_units)
    unit = 10 ** (DECIMALS[q.currency] - 2)  # a cent of a stablecoin
    if q.currency == "ETH":
        unit = 4 * 10**12  # about a cent of ETH at $2500
    if variant == "short":
        return amount - 500 * unit
    if variant == "long":
        return amount + 1000 * unit
    if variant == "long_within_tolerance":
        return amount + unit
    if variant == "round":
        return 7 * 10 ** DECIMALS[currency]
    if variant == "wrong_currency":
        scheme = scheme_for(currency, DECIMALS[currency])
        base = 25 * 10 ** DECIMALS[currency] if currency != "ETH" else 10**16
        return base + q.slot * scheme.quantum
    return amount


def _transfer(currency: str, sender: str, value: int, token: str | None = None) -> Log | int:
    if currency == "ETH" and token is None:
        return value
    return Log(token or TOKENS[currency], sender, PAY_TO, value)


async def pay(w: World) -> None:
    if not w.quotes:
        return await quote(w)
    q = w.rng.choice(w.quotes)
    variant = w.rng.choice(
        (
            "exact",
            "exact",
            "exact",
            "short",
            "long",
            "long_within_tolerance",
            "wrong_currency",
            "stranger",
            "round",
            "fake_token",
            "batch",
        )
    )
    if w.rng.random() < 0.2:
        w.tick(TTL + w.rng.randint(0, LATE))  # late (maybe past the late window)
        variant = "exact"
    sender = q.payer_address or w.rng.choice(WALLETS)
    if variant == "stranger":
        sender = STRANGER
    currency = q.currency
    if variant == "wrong_currency":
        currency = w.rng.choice([c for c in ("USDC", "USDT", "ETH") if c != q.currency])
    value = _value_for(w, q, variant, currency)
    logs: list[Log] = []
    native = 0
    moved = _transfer(currency, sender, value, FAKE if variant == "fake_token" else None)
    if isinstance(moved, int):
        native = moved
    else:
        logs.append(moved)
    if variant == "batch":
        others = [o for o in w.quotes if o.id != q.id and o.currency != "ETH"]
        if others and q.currency != "ETH":
            other = w.rng.choice(others)
            logs.append(Log(TOKENS[other.currency], sender, PAY_TO, int(other.amount_base_units)))
    tx = SimTx(
        w.chain.new_tx_hash(), sender, PAY_TO if native else (logs[0].token), native, tuple(logs)
    )
    txs = [tx]
    if w.rng.random() < 0.3:  # another transaction with a log first: the payment's index moves
        txs.insert(0, _filler(w))
    w.tick(w.rng.randint(1, 30))
    block = w.chain.mine(w.stamp(), txs)
    w.dirty = True
    w.trace.step(
        f"pay {variant} for {q.id} ({q.currency}) in {currency}: {value} from {sender} "
        f"tx {tx.hash[:10]} logs {len(logs)} block {block.number}"
    )


def _filler(w: World) -> SimTx:
    return SimTx(
        w.chain.new_tx_hash(),
        STRANGER,
        USDC,
        0,
        (Log(USDC, STRANGER, WALLETS[0], 1),),
    )


async def mine(w: World) -> None:
    n = w.rng.randint(1, DEPTH)
    for _ in range(n):
        w.tick(w.rng.randint(5, 15))
        w.chain.mine(w.stamp())
    w.dirty = True
    w.trace.step(f"mine {n} -> head {w.chain.head.number}")


async def reorg(w: World) -> None:
    depth = w.rng.randint(1, MAX_REORG)
    dropped = w.chain.reorg(depth)
    # Payments (not the fillers) may be re-mined.
    kept = [tx for tx in dropped if tx.value or any(log.to == PAY_TO for log in tx.logs)]
    again = [tx for tx in kept if w.rng.random() < 0.6]
    w.rng.shuffle(again)
    blocks = w.rng.randint(1, depth + 1)
    per_block: list[list[SimTx]] = [[] for _ in range(blocks)]
    for tx in again:
        per_block[w.rng.randrange(blocks)].append(tx)
    for txs in per_block:
        if txs and w.rng.random() < 0.5:
            txs.insert(0, _filler(w))
        w.tick(w.rng.randint(5, 15))
        w.chain.mine(w.stamp(), txs)
    w.dirty = True
    w.trace.step(
        f"reorg {depth} blocks: {len(dropped)} txs dropped, re-mined "
        f"{[t.hash[:10] for t in again]} over {blocks} blocks -> head {w.chain.head.number}"
    )


async def wait(w: World) -> None:
    seconds = w.rng.choice((60, 300, TTL, LATE))
    w.tick(seconds)
    w.trace.step(f"clock +{seconds} s")


async def poll(w: World) -> None:
    result = await w.watcher.catch_up()
    w.dirty = result.head != w.chain.head.number
    w.trace.step(f"watcher catches up to {result.cursor}")


async def restart(w: World) -> None:
    """A new watcher (the old process died); it runs one poll of its catch-up, then the step
    ends: the next poll or restart goes on from the stored cursor."""
    w.watcher = PaymentWatcher(w.payments, "local")
    result = await w.watcher.poll_once()
    w.dirty = w.dirty or result.cursor < result.head
    if result.cursor >= result.head and result.head == w.chain.head.number:
        w.dirty = False
    w.trace.step(f"watcher restarted, one poll to {result.cursor} of {result.head}")


async def crash(w: World) -> None:
    """The watcher's process dies part-way through a catch-up (at a random database statement:
    mid-block, mid-activation); a new process starts from what was committed."""
    k = w.rng.randint(1, 30)
    w.crasher.countdown = k
    try:
        await w.watcher.catch_up()
        w.trace.step(f"crash armed at statement {k}: the catch-up finished first")
    except Exception as exc:
        if not _crashed(exc):
            raise
        w.trace.step(f"watcher crashes at its database statement {k}; restarted")
    finally:
        w.crasher.countdown = 0
    w.watcher = PaymentWatcher(w.payments, "local")
    w.dirty = True


async def resolve(w: World) -> None:
    """An admin credits or refunds a listed item, once it is beyond any simulated reorg."""
    rows, _ = await w.funds.list()
    final = [
        r for r in rows if r.block_number and w.chain.head.number - r.block_number >= MAX_REORG
    ]
    if not final:
        return
    row = w.rng.choice(final)
    if w.rng.random() < 0.5:
        account = row.payment.account_id if row.payment else w.rng.choice(ACCOUNTS)
        await w.funds.resolve(
            row.item_id, credit=Credit(account, "pro", "month"), actor="sim", reason="simulated"
        )
        w.trace.step(f"admin credits {row.item_id} ({row.kind}) to {account}")
    else:
        await w.funds.resolve(row.item_id, refund=Refund("0x" + "ee" * 32), actor="sim")
        w.trace.step(f"admin refunds {row.item_id} ({row.kind})")


ACTIONS = (
    (quote, 16),
    (pay, 34),
    (mine, 10),
    (reorg, 9),
    (wait, 6),
    (poll, 14),
    (restart, 4),
    (crash, 5),
    (resolve, 2),
)
#: The steps that run the service's code (the others change only the chain or the clock).
TOUCHES_SERVICE = frozenset({quote, poll, restart, resolve})


async def run_seed(seed: int, store: Store, crasher: Crasher) -> None:
    w = await make_world(seed, store, crasher)
    await w.reader.connect()
    actions = [a for a, _ in ACTIONS]
    weights = [n for _, n in ACTIONS]
    try:
        for _ in range(STEPS):
            action = w.rng.choices(actions, weights)[0]
            await action(w)
            if action in TOUCHES_SERVICE:
                # The other steps change only the chain or the clock: nothing checked here can
                # change until the service acts on them.
                await verify(w)
        # The end: the chain goes quiet, the watcher catches up, everything is final.
        for _ in range(MAX_REORG + 1):
            w.tick(12)
            w.chain.mine(w.stamp())
        w.trace.step("mine to finality; watcher catches up")
        await w.watcher.catch_up()
        w.dirty = False
        await verify(w, final=True)
        # An admin works through what is listed; everything stays accounted for.
        for _ in range(2):
            await resolve(w)
        await verify(w, final=True)
    except Violation as exc:
        raise SeedFailed(seed, w.trace.failure(str(exc))) from None
    except Exception as exc:
        raise SeedFailed(seed, w.trace.failure(f"{type(exc).__name__}: {exc}")) from exc
    finally:
        await w.reader.close()


async def reset(store: Store) -> None:
    async with store.engine.begin() as connection:
        for table in TABLES:
            await connection.execute(delete(table))


#: Seeds run in this many lanes at once, each on a database of its own (seeds are independent:
#: each has its own chain, clock and rows, so the interleaving changes nothing they see).
LANES = 4


async def run_lane(store: Store, lane: list[int]) -> SeedFailed | None:
    """Run a lane's seeds in order; stop at (and return) the first that fails."""
    crasher = Crasher(store)
    for seed in lane:
        await reset(store)
        try:
            await run_seed(seed, store, crasher)
        except SeedFailed as failed:
            return failed
    return None


async def run_all(stores: list[Store]) -> int:
    """Run every seed; fail with the trace of the lowest failing seed."""
    chosen = seeds()
    lanes = [chosen[i :: len(stores)] for i in range(len(stores))]
    results = await asyncio.gather(
        *(run_lane(store, lane) for store, lane in zip(stores, lanes, strict=True))
    )
    failures = sorted((f for f in results if f is not None), key=lambda f: f.seed)
    if failures:
        pytest.fail(str(failures[0]), pytrace=False)
    return len(chosen)


def _scratch_dir() -> str | None:
    """Memory-backed /dev/shm when there is one: a real SQLite file whose fsyncs cost nothing."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() else None


@pytest.fixture
async def sim_sqlite() -> AsyncIterator[list[Store]]:
    with tempfile.TemporaryDirectory(dir=_scratch_dir()) as directory:
        stores = []
        try:
            for lane in range(LANES):
                url = f"sqlite+aiosqlite:///{directory}/sim{lane}.db"
                await upgrade(url)
                stores.append(Store.open(url))
            yield stores
        finally:
            for store in stores:
                await store.close()


@pytest.fixture
async def sim_postgres(postgres_server: PostgresServer) -> AsyncIterator[list[Store]]:
    urls: list[str] = []
    stores: list[Store] = []
    try:
        for _ in range(LANES):
            urls.append(await postgres_server.create_database())
            await upgrade(urls[-1])
            stores.append(Store.open(urls[-1]))
        yield stores
    finally:
        for store in stores:
            await store.close()
        for url in urls:
            await postgres_server.drop_database(url)


@pytest.mark.slow
async def test_crypto_simulation_sqlite(sim_sqlite: list[Store]) -> None:
    started = time.perf_counter()
    ran = await run_all(sim_sqlite)
    print(f"crypto simulation: {ran} seeds on SQLite in {time.perf_counter() - started:.1f} s")


@pytest.mark.slow
@pytest.mark.postgres
async def test_crypto_simulation_postgres(sim_postgres: list[Store]) -> None:
    started = time.perf_counter()
    ran = await run_all(sim_postgres)
    print(f"crypto simulation: {ran} seeds on PostgreSQL in {time.perf_counter() - started:.1f} s")
