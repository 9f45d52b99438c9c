"""Money received without access, and an admin's way out: list what the chain paid that gave
no plan (underpaid, overpaid beyond the tolerance, paid late, wrong currency, wrong payer,
unmatched) and resolve one item, by crediting it to an account and plan (activated like a
confirmed payment, with its revenue) or by recording its refund. Every resolution is audited
in `override_audit` with the actor, like account overrides."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from adapters.chains import ChainError
from entitlements.admin.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    decode_token,
    encode_token,
)
from entitlements.crypto.amounts import format_amount
from entitlements.crypto.payments import CryptoPayments
from entitlements.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from entitlements.store.crypto_funds_repository import (
    FUNDS_KINDS,
    FundsFilter,
    FundsRow,
    FundsStore,
    ResolutionRecord,
)
from entitlements.store.crypto_repository import PaymentRecord
from entitlements.store.records import SubscriptionInterval

__all__ = ["FUNDS_KINDS", "Credit", "FundsFilter", "FundsRow", "Refund", "UnsettledFunds"]

_TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
MAX_REASON_LENGTH = 2000


@dataclass(frozen=True, slots=True)
class Credit:
    """Credit the money to `account_id` on `plan_id` for one `interval`; for a payment, empty
    fields default to the payment's own."""

    account_id: str = ""
    plan_id: str = ""
    interval: SubscriptionInterval | None = None


@dataclass(frozen=True, slots=True)
class Refund:
    """The money was sent back in the transaction `tx_hash`."""

    tx_hash: str


@dataclass(frozen=True, slots=True)
class _PageFilter:
    filters: FundsFilter

    def digest(self) -> str:
        f = self.filters
        text = json.dumps(["funds", f.kind, f.network, f.account_id, f.include_resolved])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class UnsettledFunds:
    """ListUnsettledFunds and ResolveUnsettledFunds over a `FundsStore` and the payments domain
    (whose activation a credit goes through)."""

    def __init__(
        self,
        payments: CryptoPayments,
        store: FundsStore,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.payments = payments
        self.store = store
        self._clock = clock or payments.clock

    @property
    def tolerance_cents(self) -> int:
        return self.payments.settings.overpay_tolerance_cents

    async def list(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        filters: FundsFilter = FundsFilter(),  # noqa: B008 (frozen)
    ) -> tuple[list[FundsRow], str]:
        """A page of items newest first, and the next page's token ("" on the last)."""
        if page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        if filters.kind is not None and filters.kind not in FUNDS_KINDS:
            raise InvalidArgument("kind", f"unknown kind {filters.kind!r}")
        if filters.network and self.payments.chains.network(filters.network) is None:
            raise InvalidArgument("network", f"unknown network {filters.network!r}")
        digest = _PageFilter(filters)
        after = (
            decode_token(
                page_token,
                digest,
                listing="ListUnsettledFunds",
                names="kind, network, account_id, include_resolved",
            )
            if page_token
            else None
        )
        rows = await self.store.page(
            limit=size + 1, after=after, filters=filters, tolerance_cents=self.tolerance_cents
        )
        more = len(rows) > size
        rows = rows[:size]
        token = encode_token((rows[-1].created_at, rows[-1].item_id), digest) if more else ""
        return rows, token

    async def resolve(
        self,
        item_id: str,
        *,
        credit: Credit | None = None,
        refund: Refund | None = None,
        reason: str = "",
        actor: str,
    ) -> tuple[FundsRow, int]:
        """Resolve one item (credit or refund) and answer it as stored now, with the credited
        account's entitlement revision (0 for a refund). A refused call changes nothing."""
        if not item_id:
            raise InvalidArgument("id", "is required")
        if (credit is None) == (refund is None):
            raise InvalidArgument("action", "give exactly one of credit or refund")
        if len(reason) > MAX_REASON_LENGTH:
            raise InvalidArgument("reason", f"must be at most {MAX_REASON_LENGTH} characters")
        if refund is not None and not _TX_HASH.match(refund.tx_hash):
            raise InvalidArgument("refund.tx_hash", "must be 0x followed by 64 hex digits")
        row = await self.store.item(item_id, self.tolerance_cents)
        if row is None:
            raise NotFound(f"no unsettled funds {item_id!r}")
        if row.resolution is not None:
            raise FailedPrecondition(
                f"{item_id} was already {row.resolution.action} by {row.resolution.actor}"
            )
        if not row.kind:
            raise FailedPrecondition(
                f"{item_id} is not money received without access (nothing to resolve)"
            )
        network = row.payment.network if row.payment else row.transfer.network  # type: ignore[union-attr]
        await self._require_final(network, row)
        now = self._clock()
        payment: PaymentRecord | None = None
        account = row.payment.account_id if row.payment else ""
        if credit is not None:
            payment = await self._credit_payment(row, credit, now)
            account = payment.account_id
        resolution = ResolutionRecord(
            item_id=item_id,
            action="credited" if credit is not None else "refunded",
            account_id=payment.account_id if payment else "",
            plan_id=payment.plan_id if payment else "",
            interval=payment.interval if payment else "",
            payment_id=payment.id if payment else None,
            refund_tx_hash=refund.tx_hash.lower() if refund else "",
            actor=actor,
            reason=reason,
            created_at=now,
        )
        received, decimals, currency, tx_hash = await self._money(row)
        await self.store.resolve(
            row,
            resolution,
            credit=payment,
            audit_account=account,
            details={
                "item_id": item_id,
                "kind": row.kind,
                "action": resolution.action,
                "account_id": resolution.account_id,
                "plan_id": resolution.plan_id,
                "interval": resolution.interval,
                "payment_id": resolution.payment_id,
                "refund_tx_hash": resolution.refund_tx_hash,
                "amount": format_amount(received, decimals),
                "currency": currency,
                "network": network,
                "tx_hash": tx_hash,
                "reason": reason,
            },
        )
        revision = 0
        if payment is not None:
            await self.payments.activate(payment)
            revision = (await self.payments.service.get(payment.account_id)).revision
        stored = await self.store.item(item_id, self.tolerance_cents)
        assert stored is not None
        return stored, revision

    async def _require_final(self, network: str, row: FundsRow) -> None:
        """Only money at the confirmation depth is resolved: a reorg could still undo it."""
        reads = self.payments.reads.get(network)
        if reads is None:
            raise FailedPrecondition(f"network {network!r} is not configured on this server")
        try:
            head = await reads.block_number()
        except ChainError as exc:
            raise Unavailable(f"the {network} node cannot be read: {exc.message}") from exc
        depth = self.payments.settings.depth(network)
        if row.block_number <= 0 or head - row.block_number + 1 < depth:
            raise FailedPrecondition(
                f"{row.item_id} is not yet at the confirmation depth ({depth} blocks on "
                f"{network}); resolve it once a reorg can no longer undo it"
            )

    async def decimals(self, row: FundsRow) -> int | None:
        """The decimals of an item's currency (None when the node cannot be read now)."""
        try:
            return (await self._money(row))[1]
        except Unavailable:
            return None

    async def _money(self, row: FundsRow) -> tuple[int, int, str, str]:
        """(received base units, decimals, currency, tx hash) of an item."""
        if row.payment is not None:
            p = row.payment
            return int(p.received_base_units), p.decimals, p.currency, p.tx_hash or ""
        t = row.transfer
        assert t is not None
        decimals = 18
        if t.token_contract:
            try:
                decimals = await self.payments.reads[t.network].decimals(t.token_contract)
            except ChainError as exc:
                raise Unavailable(f"the {t.network} node cannot be read: {exc.message}") from exc
        return int(t.value_base_units), decimals, t.currency, t.tx_hash

    async def _credit_payment(self, row: FundsRow, credit: Credit, now: datetime) -> PaymentRecord:
        """The payment a credit activates through: confirmed, resolved, at the plan's price."""
        source = row.payment
        account = credit.account_id or (source.account_id if source else "")
        if not account:
            raise InvalidArgument("credit.account_id", "is required for a transfer")
        plan_id = credit.plan_id or (source.plan_id if source else "")
        if not plan_id:
            raise InvalidArgument("credit.plan_id", "is required for a transfer")
        plan = self.payments.catalog.plan(plan_id, field="credit.plan_id")
        interval: SubscriptionInterval | None = credit.interval
        if interval is None:
            if source is None:
                raise InvalidArgument("credit.interval", "is required for a transfer")
            interval = "year" if source.interval == "year" else "month"
        price = plan.price_monthly_cents if interval == "month" else plan.price_yearly_cents
        if price is None or price <= 0:
            raise InvalidArgument(
                "credit.plan_id", f"plan {plan.id!r} has no {interval}ly list price to credit"
            )
        received, decimals, currency, tx_hash = await self._money(row)
        network = source.network if source else row.transfer.network  # type: ignore[union-attr]
        reads = self.payments.reads[network]
        return PaymentRecord(
            id="cp_" + secrets.token_hex(12),
            account_id=account,
            plan_id=plan.id,
            interval=interval,
            network=network,
            chain_id=reads.chain_id,
            currency=currency,
            token_contract=source.token_contract if source else row.transfer.token_contract,  # type: ignore[union-attr]
            pay_to_address=source.pay_to_address if source else row.transfer.to_address,  # type: ignore[union-attr]
            amount_base_units=str(received),
            decimals=decimals,
            slot=0,
            open_slot=None,
            price_cents=price,
            eth_usd_rate=source.eth_usd_rate if source else None,
            status="confirmed",
            received_base_units=str(received),
            tx_hash=tx_hash,
            confirmations=0,
            required_confirmations=self.payments.settings.depth(network),
            created_block=row.block_number,
            created_at=now,
            expires_at=now + timedelta(seconds=0),
            updated_at=now,
            confirmed_at=now,
            admin_note=f"{now.isoformat()}: credited by an admin for {row.item_id} ({row.kind})",
            resolution="admin_credit",
        )
