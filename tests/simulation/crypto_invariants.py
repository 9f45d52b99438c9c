"""The crypto simulation's invariants, checked against the simulated chain (the model) and what
the service stored (see test_crypto_simulation.py for the list)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from entitlements.crypto.amounts import scheme_for
from entitlements.crypto.funds import FundsFilter
from entitlements.store import models
from entitlements.store.admin_repository import AdminStore
from entitlements.store.crypto_funds_repository import unmatched_item_id
from entitlements.store.crypto_repository import (
    PaymentRecord,
    TransferRecord,
    UnmatchedRecord,
    crypto_revenue,
)
from tests.simulation.crypto_world import (
    ACCOUNTS,
    DECIMALS,
    DEPTH,
    FAR,
    PAY_TO,
    TOKENS,
    TOLERANCE_CENTS,
    Violation,
    World,
)


@dataclass
class Seen:
    payments: dict[str, PaymentRecord]
    transfers: list[TransferRecord]
    unmatched: list[UnmatchedRecord]
    revenue: list[Any]
    plans: dict[str, str]


async def observe(w: World) -> Seen:
    """What the service stored, read in one transaction; revenue as analytics reports it; each
    account's plan through EntitlementService (its cache, as callers see it)."""
    async with AsyncSession(w.store.engine) as session, session.begin():
        payments = {
            r.id: PaymentRecord(**{k: getattr(r, k) for k in _PAYMENT_KEYS})
            for r in await session.scalars(select(models.CryptoPaymentRow))
        }
        transfers = [
            TransferRecord(**{k: getattr(r, k) for k in _TRANSFER_KEYS})
            for r in await session.scalars(select(models.CryptoTransferRow))
        ]
        unmatched = [
            UnmatchedRecord(**{k: getattr(r, k) for k in _UNMATCHED_KEYS})
            for r in await session.scalars(select(models.CryptoUnmatchedTransfer))
        ]
    revenue = [
        f
        for f in await AdminStore(w.store, revenue_sources=[crypto_revenue]).revenue_facts(FAR)
        if f.payment_method == "crypto"
    ]
    plans = {a: (await w.payments.service.get(a)).plan_id for a in ACCOUNTS}
    return Seen(payments, transfers, unmatched, revenue, plans)


_PAYMENT_KEYS = tuple(PaymentRecord.__dataclass_fields__)
_UNMATCHED_KEYS = tuple(UnmatchedRecord.__dataclass_fields__)
_TRANSFER_KEYS = tuple(TransferRecord.__dataclass_fields__)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Violation(message)


def _settled(p: PaymentRecord) -> bool:
    """Settled and unreversed, as stored: a paid status whose activation is applied, or an
    admin's credit."""
    if p.resolution == "admin_credit":
        return p.activation == "applied"
    return p.status in ("confirmed", "overpaid") and p.activation == "applied"


def check_books(w: World, seen: Seen) -> None:
    """Invariants that hold after every step."""
    live = [t for t in seen.transfers if t.status != "reorged"]
    for p in seen.payments.values():
        mine_ = [t for t in live if t.payment_id == p.id]
        check(
            int(p.received_base_units) == sum(int(t.value_base_units) for t in mine_)
            or p.resolution is not None
            or p.status in ("pending", "expired"),
            f"{p.id} received {p.received_base_units} but its live transfers sum "
            f"{sum(int(t.value_base_units) for t in mine_)}",
        )
    keys = [(t.tx_hash, t.log_position) for t in live] + [
        (u.tx_hash, u.log_position) for u in seen.unmatched if not u.reorged
    ]
    check(len(keys) == len(set(keys)), f"a transfer is recorded twice: {sorted(keys)}")
    settled = [p for p in seen.payments.values() if _settled(p)]
    check(
        sorted(f.amount_cents for f in seen.revenue) == sorted(p.price_cents for p in settled),
        f"crypto revenue {[f.amount_cents for f in seen.revenue]} is not the settled payments' "
        f"{[(p.id, p.price_cents) for p in settled]}",
    )
    for account in ACCOUNTS:
        granted = any(p.account_id == account for p in settled)
        check(
            (seen.plans[account] == "pro") == granted,
            f"{account} is on {seen.plans[account]} but settled payments say "
            f"{'pro' if granted else 'free'}",
        )


def check_chain(w: World, seen: Seen, cursor: int) -> None:
    """Invariants against the canonical chain, once the watcher has caught up with it."""
    head = w.chain.head.number
    canonical = {(t.tx_hash, t.position): t for t in w.chain.transfers(PAY_TO)}
    live = [t for t in seen.transfers if t.status != "reorged"]
    unmatched = [u for u in seen.unmatched if not u.reorged]
    for t in live:
        c = canonical.get((t.tx_hash, t.log_position))
        check(
            c is not None and c.block_hash == t.block_hash and str(c.value) == t.value_base_units,
            f"transfer {t.tx_hash[:10]}/{t.log_position} of {t.payment_id} counts but is not "
            f"on the chain as recorded",
        )
        assert c is not None
        p = seen.payments[t.payment_id]
        currency = "ETH" if not c.token else next(k for k, v in TOKENS.items() if v == c.token)
        check(currency == p.currency, f"a {currency} transfer pays {p.id} quoted in {p.currency}")
        slot = scheme_for(currency, DECIMALS[currency]).slot_of(c.value)
        check(slot == p.slot, f"{t.tx_hash[:10]} carries slot {slot}, pays {p.id} (slot {p.slot})")
        if p.payer_address:
            check(c.sender == p.payer_address, f"{p.id} paid from {c.sender}, not its payer")
    for u in unmatched:
        c = canonical.get((u.tx_hash, u.log_position))
        check(
            c is not None and c.block_hash == u.block_hash,
            f"unmatched {u.tx_hash[:10]}/{u.log_position} is listed but not on the chain",
        )
    recorded = {(t.tx_hash, t.log_position) for t in live} | {
        (u.tx_hash, u.log_position) for u in unmatched
    }
    for key, c in canonical.items():
        if c.block_number <= cursor:
            check(key in recorded, f"transfer {key[0][:10]}/{key[1]} on chain was never recorded")
    # Each payment's status is what the chain says of its transfers.
    for p in seen.payments.values():
        if p.resolution is not None:
            continue
        mine_ = [canonical[(t.tx_hash, t.log_position)] for t in live if t.payment_id == p.id]
        if not mine_:
            expected = {"pending", "expired"}
        elif min(head - c.block_number + 1 for c in mine_) < DEPTH:
            expected = {"processing"}
        elif min(c.timestamp for c in mine_) > p.expires_at.timestamp():
            expected = {"paid_late"}
        else:
            total, amount = sum(c.value for c in mine_), int(p.amount_base_units)
            expected = {
                "underpaid" if total < amount else "confirmed" if total == amount else "overpaid"
            }
        check(p.status in expected, f"{p.id} is {p.status}; its chain transfers say {expected}")


async def check_accounted(w: World, seen: Seen) -> None:
    """Every transfer at the confirmation depth settles one quote or is listed for an admin."""
    head = w.chain.head.number
    everything, more = await w.funds.list(page_size=500, filters=FundsFilter(include_resolved=True))
    check(not more, "more than 500 items: the simulation is not meant to make so many")
    listed = {r.item_id for r in everything if r.resolution is None}
    done = {r.item_id for r in everything if r.resolution is not None}
    for t in (t for t in seen.transfers if t.status != "reorged"):
        if head - t.block_number + 1 < DEPTH:
            continue
        p = seen.payments[t.payment_id]
        if p.status == "processing":
            continue
        ok = p.status == "confirmed" or (
            p.status == "overpaid" and p.excess_cents <= TOLERANCE_CENTS
        )
        check(
            ok or p.id in listed or p.id in done,
            f"{t.tx_hash[:10]} pays {p.id} ({p.status}) yet is neither settled nor listed",
        )
    for u in seen.unmatched:
        if u.reorged or head - u.block_number + 1 < DEPTH:
            continue
        item = unmatched_item_id(u.id or 0)
        check(item in listed or item in done, f"unmatched {item} is not listed")


async def verify(w: World, *, final: bool = False) -> None:
    seen = await observe(w)
    check_books(w, seen)
    if not w.dirty:
        cursor = await w.repo.cursor("local")
        check_chain(w, seen, cursor.block_number if cursor else -1)
        if final:
            await check_accounted(w, seen)
