"""Crypto payments: quotes with unique amounts, matching transfers to them, settling their status
from confirmations, and activating (or, after a reorg, revoking) the plan they pay for.

Status of a payment, from its (not reorged) transfers:
- none: PENDING, EXPIRED once the quote expired;
- some below the confirmation depth: PROCESSING;
- all at the depth: PAID_LATE if the first arrived after expiry, else UNDERPAID, CONFIRMED or
  OVERPAID by the total. CONFIRMED and OVERPAID activate the plan; the others wait for an admin.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from eth_utils.address import is_address, to_checksum_address

from adapters.chains import ChainError, ChainSettings
from adapters.chains.payments import PaymentReads
from entitlements.crypto.amounts import MAX_SLOT, format_amount, scheme_for
from entitlements.crypto.config import CURRENCIES, ETH_NETWORKS, CryptoSettings
from entitlements.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    UnknownNetwork,
    UnsupportedCurrency,
)
from entitlements.policies import Catalog
from entitlements.service import EntitlementService
from entitlements.store.crypto_repository import (
    CryptoStore,
    PaymentRecord,
    RevenueRecord,
    TransferRecord,
    UnmatchedRecord,
)
from entitlements.store.records import SubscriptionInterval, SubscriptionRecord, utcnow

__all__ = [
    "CRYPTO_FEATURE",
    "ChainEvent",
    "CryptoPayments",
    "QuoteRequest",
    "TransactionInfo",
    "add_interval",
    "block_time",
    "excess_cents",
]

log = logging.getLogger(__name__)

#: The feature a plan must include to be paid in crypto.
CRYPTO_FEATURE = "cryptoPayments"
_TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
_PAID = frozenset({"confirmed", "overpaid"})
#: Final for matching: the payment's slot is released and further transfers are unmatched.
_CLOSED = frozenset({"confirmed", "overpaid", "paid_late"})


@dataclass(frozen=True, slots=True)
class QuoteRequest:
    account_id: str
    plan_id: str
    interval: SubscriptionInterval
    network: str
    currency: str
    #: When given, only a transfer from this wallet pays the quote.
    payer_address: str | None = None


@dataclass(frozen=True, slots=True)
class ChainEvent:
    """A transfer to the receiving address seen on chain. `log_position` is its position among
    its transaction's logs (-1: native coin), the identity a reorg cannot change; `log_index`
    its index in the block."""

    tx_hash: str
    log_position: int
    log_index: int
    block_number: int
    block_hash: str
    block_time: datetime
    token_contract: str
    from_address: str
    to_address: str
    value: int


@dataclass(frozen=True, slots=True)
class TransactionInfo:
    found: bool
    succeeded: bool = False
    block_number: int = 0
    confirmations: int = 0
    required_confirmations: int = 0
    payment_id: str = ""


def add_interval(start: datetime, interval: str) -> datetime:
    """`start` plus one calendar month or year (the day clamped to the month's last)."""
    months = 12 if interval == "year" else 1
    month0 = start.month - 1 + months
    year, month = start.year + month0 // 12, month0 % 12 + 1
    for day in (start.day, 30, 29, 28):
        try:
            return start.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise ValueError(f"cannot add a {interval} to {start}")  # pragma: no cover


class CryptoPayments:
    """The crypto payment domain over a `CryptoStore`, the networks' `PaymentReads` and the
    `EntitlementService` that activations go through."""

    def __init__(
        self,
        repo: CryptoStore,
        service: EntitlementService,
        catalog: Catalog,
        chains: ChainSettings,
        settings: CryptoSettings,
        reads: Mapping[str, PaymentReads],
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.repo = repo
        self.service = service
        self.catalog = catalog
        self.chains = chains
        self.settings = settings
        self.reads = dict(reads)
        self.clock = clock

    # -- quotes --

    async def create(self, request: QuoteRequest) -> PaymentRecord:
        plan = self.catalog.plan(request.plan_id, field="plan_id")
        if CRYPTO_FEATURE not in plan.features:
            raise InvalidArgument(
                "plan_id",
                f"plan {plan.id!r} does not include {CRYPTO_FEATURE}: choose pro or above",
            )
        price = plan.price_monthly_cents if request.interval == "month" else plan.price_yearly_cents
        if price is None or price <= 0:
            raise InvalidArgument(
                "interval", f"plan {plan.id!r} has no {request.interval}ly list price"
            )
        reads = self._reads(request.network, "network")
        payer = None
        if request.payer_address:
            if not is_address(request.payer_address):
                raise InvalidArgument(
                    "payer_address", "must be a 0x-prefixed 20-byte address (or empty)"
                )
            payer = to_checksum_address(request.payer_address)
        currency = request.currency
        if currency not in CURRENCIES:
            raise UnsupportedCurrency(
                "currency", f"unknown currency {currency!r}: ETH, USDC or USDT"
            )
        token = ""
        expected: int | None = 18
        if currency == "ETH":
            if request.network not in ETH_NETWORKS:
                raise UnsupportedCurrency(
                    "currency", f"{request.network}'s native coin is not ETH: pay in USDC or USDT"
                )
        else:
            configured = self.settings.token(request.network, currency)
            if configured is None:
                raise UnsupportedCurrency(
                    "currency", f"no {currency} contract is configured for {request.network}"
                )
            token, expected = configured.address, configured.decimals
        pay_to = self.settings.pay_to_address
        if pay_to is None:
            raise FailedPrecondition(
                "crypto payments are not configured: NEXT_PUBLIC_PAYMENT_WALLET_ADDRESS is not set"
            )
        try:
            decimals = await reads.decimals(token) if token else 18
            if expected is not None and decimals != expected:
                raise FailedPrecondition(
                    f"the {currency} contract {token} on {request.network} reports {decimals} "
                    f"decimals, the configuration expects {expected}: check it"
                )
            try:
                scheme = scheme_for(currency, decimals)
            except ValueError as exc:
                raise FailedPrecondition(f"{currency} on {request.network}: {exc}") from exc
            rate: Decimal | None = None
            if currency == "ETH":
                rate = await self._eth_usd(request.network, reads)
                base = scheme.eth_base(price, rate)
            else:
                base = scheme.stable_base(price)
            head = await reads.block_number()
        except ChainError as exc:
            raise Unavailable(f"the {request.network} node cannot be read: {exc.message}") from exc
        now = self.clock()
        draft = PaymentRecord(
            id="cp_" + secrets.token_hex(12),
            account_id=request.account_id,
            plan_id=plan.id,
            interval=request.interval,
            network=request.network,
            chain_id=reads.chain_id,
            currency=currency,
            token_contract=token,
            pay_to_address=pay_to,
            amount_base_units="0",
            decimals=decimals,
            slot=0,
            open_slot=None,
            price_cents=price,
            eth_usd_rate=None if rate is None else str(rate),
            status="pending",
            received_base_units="0",
            tx_hash=None,
            confirmations=0,
            required_confirmations=self.settings.depth(request.network),
            created_block=head,
            created_at=now,
            expires_at=now + timedelta(seconds=self.settings.quote_ttl_seconds),
            updated_at=now,
            payer_address=payer,
        )
        return await self.repo.create_payment(
            draft, lambda slot: scheme.amount(base, slot), MAX_SLOT
        )

    async def _eth_usd(self, network: str, reads: PaymentReads) -> Decimal:
        """The locked ETH price: the fixed dev rate, or the network's Chainlink feed."""
        if self.settings.eth_usd_price is not None:
            return self.settings.eth_usd_price
        feed = self.settings.eth_usd_feeds.get(network)
        if feed is None:
            raise FailedPrecondition(
                f"no ETH/USD price for {network}: set ENTITLEMENTS_ETH_USD_FEED_"
                f"{network.upper().replace('-', '_')} (or ENTITLEMENTS_ETH_USD_PRICE in dev)"
            )
        price = await reads.chainlink_price(feed)
        age = self.clock().timestamp() - price.updated_at
        if age > self.settings.max_price_age_seconds or price.answer <= 0:
            raise Unavailable(
                f"the ETH/USD feed on {network} is stale ({age:.0f} s old) or invalid; "
                "not quoting on an old price"
            )
        return Decimal(price.answer) / Decimal(10) ** price.decimals

    def _reads(self, network: str, field: str) -> PaymentReads:
        if not network:
            raise UnknownNetwork(field, "is required")
        if self.chains.network(network) is None:
            raise UnknownNetwork(field, f"unknown network {network!r}")
        reads = self.reads.get(network)
        if reads is None:
            raise UnknownNetwork(field, f"network {network!r} is not configured on this server")
        return reads

    # -- reads --

    async def get(self, payment_id: str) -> PaymentRecord:
        payment = await self.repo.get_payment(payment_id)
        if payment is None:
            raise NotFound(f"crypto payment {payment_id!r} does not exist")
        if payment.status == "pending" and self.clock() > payment.expires_at:
            payment = replace(payment, status="expired")
        return payment

    async def transaction(self, network: str, tx_hash: str) -> TransactionInfo:
        if not _TX_HASH.match(tx_hash):
            raise InvalidArgument("tx_hash", "must be 0x followed by 64 hex digits")
        reads = self._reads(network, "network")
        tx_hash = tx_hash.lower()
        depth = self.settings.depth(network)
        try:
            receipt = (await reads.receipts([tx_hash]))[tx_hash]
            if receipt is None:
                return TransactionInfo(found=False, required_confirmations=depth)
            head = await reads.block_number()
        except ChainError as exc:
            raise Unavailable(f"the {network} node cannot be read: {exc.message}") from exc
        payment_id = await self.repo.payment_of_transaction(reads.chain_id, tx_hash)
        return TransactionInfo(
            found=True,
            succeeded=receipt.succeeded,
            block_number=receipt.block_number,
            confirmations=max(0, head - receipt.block_number + 1),
            required_confirmations=depth,
            payment_id=payment_id or "",
        )

    # -- matching (the watcher) --

    def currency_of(self, network: str, token: str) -> str | None:
        """The currency of a transfer: ETH for native coin on an ETH network, USDC/USDT for a
        configured contract, None otherwise."""
        if not token:
            return "ETH" if network in ETH_NETWORKS else None
        for currency in ("USDC", "USDT"):
            configured = self.settings.token(network, currency)
            if configured is not None and configured.address.lower() == token.lower():
                return currency
        return None

    def tokens(self, network: str) -> list[str]:
        return [
            t.address
            for c in ("USDC", "USDT")
            if (t := self.settings.token(network, c)) is not None
        ]

    async def record(self, network: str, event: ChainEvent) -> str | None:
        """Record a transfer once; return the payment it was matched to (None: unmatched).

        A transfer is (network, tx hash, position among the transaction's logs): seen again,
        however a reorg moved it, it is the same transfer, back on chain if it had left. Its
        amount's digits name at most one open quote (slots are unique across currencies); it
        pays that quote only in the quote's currency and, when the quote names a payer, only
        from that wallet. Anything else is kept unmatched, with its kind, for an admin."""
        reads = self.reads[network]
        chain_id = reads.chain_id
        existing = await self.repo.transfer(chain_id, event.tx_hash, event.log_position)
        if existing is not None:
            if existing.status == "reorged" or existing.block_hash != event.block_hash:
                # Re-mined in another block after a reorg: the same transfer, its confirmations
                # counted from its new block.
                await self.repo.update_transfer(
                    replace(
                        existing,
                        status="seen",
                        block_number=event.block_number,
                        block_hash=event.block_hash,
                        block_time=event.block_time,
                        log_index=event.log_index,
                        confirmed_at=None,
                    )
                )
                log.warning("%s: transfer %s is back on chain", network, event.tx_hash)
            return existing.payment_id
        known = await self.repo.unmatched_transfer(chain_id, event.tx_hash, event.log_position)
        if known is not None:
            if known.reorged or known.block_hash != event.block_hash:
                await self.repo.update_unmatched(
                    replace(
                        known,
                        reorged=False,
                        block_number=event.block_number,
                        block_hash=event.block_hash,
                        log_index=event.log_index,
                    )
                )
            return None
        payment, kind, reason = await self._match(network, event)
        if payment is None:
            info = self.chains.network(network)
            currency = self.currency_of(network, event.token_contract)
            if currency is None:
                currency = "native" if info is None else _native_symbol(network)
            await self.repo.add_unmatched(
                UnmatchedRecord(
                    network=network,
                    chain_id=chain_id,
                    tx_hash=event.tx_hash,
                    log_position=event.log_position,
                    log_index=event.log_index,
                    block_number=event.block_number,
                    block_hash=event.block_hash,
                    currency=currency,
                    token_contract=event.token_contract,
                    from_address=event.from_address,
                    to_address=event.to_address,
                    value_base_units=str(event.value),
                    reason=reason,
                    seen_at=self.clock(),
                    kind=kind.kind,
                    named_payment_id=kind.payment_id,
                )
            )
            log.warning(
                "%s: unmatched transfer %s/%d of %d base units: %s",
                network,
                event.tx_hash,
                event.log_position,
                event.value,
                reason,
            )
            return None
        await self.repo.add_transfer(
            TransferRecord(
                payment_id=payment.id,
                network=network,
                chain_id=chain_id,
                tx_hash=event.tx_hash,
                log_position=event.log_position,
                log_index=event.log_index,
                block_number=event.block_number,
                block_hash=event.block_hash,
                block_time=event.block_time,
                token_contract=event.token_contract,
                from_address=event.from_address,
                value_base_units=str(event.value),
                seen_at=self.clock(),
            )
        )
        return payment.id

    async def _match(
        self, network: str, event: ChainEvent
    ) -> tuple[PaymentRecord | None, _Unmatched, str]:
        """The open payment `event` pays, or None with why (kind, reason)."""
        currency = self.currency_of(network, event.token_contract)
        if currency is None:
            coin = _native_symbol(network)
            return None, _Unmatched("unsupported"), f"{coin} on {network} is not accepted"
        reads = self.reads[network]
        decimals = await reads.decimals(event.token_contract) if event.token_contract else 18
        slot = scheme_for(currency, decimals).slot_of(event.value)
        if slot is None:
            return None, _Unmatched("unmatched"), "the amount carries no payment's unique digits"
        payment = await self.repo.open_payment(network, event.to_address, slot)
        if payment is None:
            return None, _Unmatched("unmatched"), f"no open payment holds the amount's slot {slot}"
        if payment.currency != currency:
            return (
                None,
                _Unmatched("wrong_currency", payment.id),
                f"sent in {currency}; its digits name payment {payment.id}, quoted in "
                f"{payment.currency}",
            )
        payer = payment.payer_address
        if payer is not None and payer.lower() != event.from_address.lower():
            return (
                None,
                _Unmatched("wrong_payer", payment.id),
                f"sent from {event.from_address}; payment {payment.id} is to be paid from {payer}",
            )
        return payment, _Unmatched("unmatched"), ""

    # -- settling --

    async def settle(
        self,
        payment: PaymentRecord,
        head: int,
        scanned_until: datetime | None = None,
        *,
        transfers: Sequence[TransferRecord] | None = None,
    ) -> PaymentRecord:
        """Recompute a payment from its transfers at chain head `head`, then activate or revoke
        its plan as needed. Idempotent: calling it again changes nothing.

        `scanned_until` is the time of the last block the watcher has read (default: now, a
        watcher at the head): a quote's slot is released only once the chain has been read
        past its late window, so a watcher catching up after downtime still matches a transfer
        made in time. A payment an admin resolved is no longer changed by the chain."""
        now = self.clock()
        if payment.resolution is not None:
            if payment.resolution == "admin_credit" and payment.activation in ("none", "pending"):
                return await self._activate(payment)  # a credit cut short by a crash
            return payment
        depth = payment.required_confirmations
        if transfers is None:
            transfers = await self.repo.transfers_of(payment.id)
        transfers = [t for t in transfers if t.status != "reorged"]
        received = sum(int(t.value_base_units) for t in transfers)
        note = payment.admin_note
        if not transfers:
            status = "expired" if now > payment.expires_at else "pending"
            confirmations = 0
        else:
            for t in transfers:
                if t.status == "seen" and head - t.block_number + 1 >= depth:
                    confirmed = replace(t, status="confirmed", confirmed_at=now)
                    await self.repo.update_transfer(confirmed)
            confirmations = min(max(0, head - t.block_number + 1) for t in transfers)
            amount = int(payment.amount_base_units)
            if confirmations < depth:
                status = "processing"
            elif min(t.block_time for t in transfers) > payment.expires_at:
                status = "paid_late"
            elif received < amount:
                status = "underpaid"
            elif received == amount:
                status = "confirmed"
            else:
                status = "overpaid"
        if status != payment.status and status in ("underpaid", "overpaid", "paid_late"):
            note = _append(
                note,
                f"{now.isoformat()}: {status}: received "
                f"{format_amount(received, payment.decimals)} {payment.currency} of "
                f"{format_amount(int(payment.amount_base_units), payment.decimals)}",
            )
        late_end = payment.expires_at + timedelta(seconds=self.settings.late_window_seconds)
        read_until = now if scanned_until is None else min(now, scanned_until)
        if status in _CLOSED or (status != "processing" and read_until > late_end):
            open_slot = None
        else:
            open_slot = payment.slot
        updated = replace(
            payment,
            status=status,
            received_base_units=str(received),
            tx_hash=transfers[0].tx_hash if transfers else None,
            confirmations=confirmations,
            open_slot=open_slot,
            admin_note=note,
            excess_cents=excess_cents(payment, received) if status == "overpaid" else 0,
        )
        if status in _PAID and payment.activation in ("none", "revoked"):
            return await self._activate(replace(updated, confirmed_at=now))
        if status in _PAID and payment.activation == "pending":
            return await self._activate(updated)
        if status not in _PAID and payment.activation in ("pending", "applied"):
            return await self._revoke(updated)
        if status not in _PAID:
            updated = replace(updated, confirmed_at=None)
        if updated != payment:
            updated = await self.repo.update_payment(updated)
            if updated.status != payment.status:
                log.info("crypto payment %s: %s -> %s", payment.id, payment.status, status)
        return updated

    async def activate(self, payment: PaymentRecord) -> PaymentRecord:
        """Activate the plan a stored payment pays for (an admin's credit), with its revenue."""
        return await self._activate(payment)

    async def _activate(self, payment: PaymentRecord) -> PaymentRecord:
        confirmed_at = payment.confirmed_at or self.clock()
        current = await self._current_subscription(payment.account_id)
        if payment.activation != "pending":
            extend = (
                current is not None
                and current.payment_method == "crypto"
                and current.plan_id == payment.plan_id
                and current.status == "active"
                and current.current_period_end is not None
                and current.current_period_end > confirmed_at
            )
            payment = replace(
                payment,
                activation="pending",
                confirmed_at=confirmed_at,
                subscription_id=current.id if extend and current else f"crypto_{payment.id}",
                previous_period_end=current.current_period_end if extend and current else None,
            )
            payment = await self.repo.update_payment(
                payment,
                revenue=RevenueRecord(
                    payment_id=payment.id,
                    account_id=payment.account_id,
                    subscription_id=payment.subscription_id,
                    plan_id=payment.plan_id,
                    interval=payment.interval,
                    amount_cents=payment.price_cents,
                    currency=payment.currency,
                    network=payment.network,
                    chain_id=payment.chain_id,
                    tx_hash=payment.tx_hash or "",
                    confirmed_at=confirmed_at,
                ),
            )
        assert payment.subscription_id is not None
        interval: SubscriptionInterval = "year" if payment.interval == "year" else "month"
        if payment.previous_period_end is None:
            record = SubscriptionRecord(
                id=payment.subscription_id,
                account_id=payment.account_id,
                plan_id=payment.plan_id,
                status="active",
                interval=interval,
                payment_method="crypto",
                current_period_start=confirmed_at,
                current_period_end=add_interval(confirmed_at, interval),
            )
        else:
            base = (
                current
                if current is not None and current.id == payment.subscription_id
                else SubscriptionRecord(
                    id=payment.subscription_id,
                    account_id=payment.account_id,
                    plan_id=payment.plan_id,
                    status="active",
                    interval=interval,
                    payment_method="crypto",
                    current_period_start=confirmed_at,
                )
            )
            record = replace(
                base,
                status="active",
                interval=interval,
                current_period_end=add_interval(payment.previous_period_end, interval),
            )
        await self.service.save_subscription(record)
        log.info(
            "crypto payment %s confirmed: %s on %s for account %s until %s",
            payment.id,
            payment.plan_id,
            payment.network,
            payment.account_id,
            record.current_period_end,
        )
        return await self.repo.update_payment(replace(payment, activation="applied"))

    async def _revoke(self, payment: PaymentRecord) -> PaymentRecord:
        now = self.clock()
        log.error(
            "REORG: crypto payment %s (account %s) was %s and its transfer is no longer on "
            "%s at the recorded block; revoking the plan it activated (status now %s)",
            payment.id,
            payment.account_id,
            "confirmed",
            payment.network,
            payment.status,
        )
        current = await self._current_subscription(payment.account_id)
        if current is not None and current.id == payment.subscription_id:
            # The period is what the subscription's other payments still pay for, each from
            # its confirmation or the end of the one before (a later payment that extended
            # this one keeps its own month).
            others = sorted(
                (
                    p
                    for p in await self.repo.applied_payments(current.id)
                    if p.id != payment.id and p.confirmed_at is not None
                ),
                key=lambda p: (p.confirmed_at, p.id),
            )
            end: datetime | None = None
            for other in others:
                assert other.confirmed_at is not None
                start = end if end is not None and end > other.confirmed_at else other.confirmed_at
                end = add_interval(start, other.interval)
            if end is None:
                record = replace(
                    current,
                    status="canceled",
                    canceled_at=now,
                    ended_at=now,
                    current_period_end=now,
                )
            else:
                record = replace(current, current_period_end=end)
            await self.service.save_subscription(record)
        else:
            log.error(
                "crypto payment %s: subscription %s is no longer the account's current one; "
                "not changed, an admin must review it",
                payment.id,
                payment.subscription_id,
            )
        payment = replace(
            payment,
            activation="revoked",
            confirmed_at=None,
            admin_note=_append(
                payment.admin_note,
                f"{now.isoformat()}: reorg after confirmation: activation revoked, revenue removed",
            ),
        )
        return await self.repo.update_payment(payment, drop_revenue=True)

    async def _current_subscription(self, account_id: str) -> SubscriptionRecord | None:
        snapshot = await self.service.store.get_account_snapshot(account_id)
        return None if snapshot is None else snapshot.subscription


@dataclass(frozen=True, slots=True)
class _Unmatched:
    kind: str
    payment_id: str | None = None


def excess_cents(payment: PaymentRecord, received: int) -> int:
    """What `received` holds beyond the payment's amount, in US cents (rounded down) at the
    quote's rate: a stablecoin is a dollar, ETH is valued at the rate locked in the quote."""
    extra = Decimal(received - int(payment.amount_base_units)) / Decimal(10) ** payment.decimals
    if payment.currency == "ETH":
        extra *= Decimal(payment.eth_usd_rate or "0")
    return max(0, int(extra * 100))


def block_time(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def _native_symbol(network: str) -> str:
    if network.startswith("polygon"):
        return "POL"
    if network.startswith("bsc"):
        return "BNB"
    return "ETH"


def _append(note: str, line: str) -> str:
    return f"{note}\n{line}" if note else line
