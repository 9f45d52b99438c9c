"""Crypto payments: quotes with unique amounts, and matching the transfers the watcher sees to
them; settling a payment (its status, activating or revoking its plan) is in `settlement.py`.
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
from entitlements.crypto.amounts import MAX_SLOT, scheme_for
from entitlements.crypto.config import CURRENCIES, ETH_NETWORKS, CryptoSettings
from entitlements.crypto.settlement import Settlement, add_interval, excess_cents
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
    TransferRecord,
    UnmatchedRecord,
)
from entitlements.store.records import SubscriptionInterval, utcnow

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
    #: The paid payment's activation revision (see `CryptoPayments.revision`); 0 if none.
    revision: int = 0


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
        #: Status, activation and revocation from a payment's transfers.
        self.settlement = Settlement(repo, service, settings, clock=clock)

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

    async def revision(self, payment: PaymentRecord) -> int:
        """0 until the payment's plan is activated; then the account's stored revision, at
        least the activation's own (a caller's `min_revision` to see it on any replica)."""
        if payment.activation != "applied":
            return 0
        return await self.service.stored_revision(payment.account_id)

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
        revision = 0
        if payment_id is not None:
            paid = await self.repo.get_payment(payment_id)
            revision = 0 if paid is None else await self.revision(paid)
        return TransactionInfo(
            found=True,
            succeeded=receipt.succeeded,
            block_number=receipt.block_number,
            confirmations=max(0, head - receipt.block_number + 1),
            required_confirmations=depth,
            payment_id=payment_id or "",
            revision=revision,
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

    # -- settling (entitlements/crypto/settlement.py) --

    async def settle(
        self,
        payment: PaymentRecord,
        head: int,
        scanned_until: datetime | None = None,
        *,
        transfers: Sequence[TransferRecord] | None = None,
    ) -> PaymentRecord:
        """See `Settlement.settle`."""
        return await self.settlement.settle(payment, head, scanned_until, transfers=transfers)

    async def activate(self, payment: PaymentRecord) -> PaymentRecord:
        """See `Settlement.activate`."""
        return await self.settlement.activate(payment)


@dataclass(frozen=True, slots=True)
class _Unmatched:
    kind: str
    payment_id: str | None = None


def block_time(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def _native_symbol(network: str) -> str:
    if network.startswith("polygon"):
        return "POL"
    if network.startswith("bsc"):
        return "BNB"
    return "ETH"
