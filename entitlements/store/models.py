"""SQLAlchemy ORM models: the schema the alembic migrations create, table by table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from entitlements.store.records import (
    OVERRIDE_KINDS,
    PAYMENT_METHODS,
    SUBSCRIPTION_INTERVALS,
    SUBSCRIPTION_STATUSES,
    utcnow,
)

__all__ = [
    "TOKEN_TYPES",
    "Account",
    "AccountOverride",
    "Base",
    "EntitlementChange",
    "EventDelivery",
    "ManualInvoice",
    "OutboxEvent",
    "OverrideAudit",
    "Subscription",
    "TokenAccessChange",
    "TokenRequirement",
    "UTCDateTime",
    "UsageEvent",
    "UsageMetric",
    "UsageThreshold",
    "WebhookEvent",
    "exists_on",
]

TOKEN_TYPES = ("ERC20", "ERC721", "ERC1155")

# Deterministic constraint names, the same on SQLite and PostgreSQL, so later migrations can
# name what they drop (and SQLite batch mode can find it).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    PostgreSQL keeps it in `timestamptz`; SQLite has no time zones, so it is stored as naive UTC
    and UTC is attached again on the way out. Naive datetimes are refused on the way in: their
    zone would be a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; use an aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def exists_on(dialect: str) -> Any:
    """Alembic's `include_object` for a schema comparison on `dialect`: leaves out what the
    models create on other databases only (`.ddl_if(dialect=...)`), which alembic would
    otherwise count as missing."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        ddl_if = getattr(obj, "_ddl_if", None)
        if ddl_if is None or ddl_if.dialect is None:
            return True
        wanted = ddl_if.dialect
        return dialect == wanted if isinstance(wanted, str) else dialect in wanted

    return include


class Base(AsyncAttrs, DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        str: String(),
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


class Account(Base):
    """A billing account (an nchat workspace); `revision` grows by one per entitlement change."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    stripe_customer_id: Mapped[str | None] = mapped_column(unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Subscription(Base):
    """A subscription of an account; old rows stay as history, the domain picks the current one."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint(_one_of("status", SUBSCRIPTION_STATUSES), name="status"),
        CheckConstraint(_one_of("interval", SUBSCRIPTION_INTERVALS), name="interval"),
        CheckConstraint(_one_of("payment_method", PAYMENT_METHODS), name="payment_method"),
    )

    id: Mapped[str] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    user_id: Mapped[str | None]
    plan_id: Mapped[str]
    status: Mapped[str]
    interval: Mapped[str]
    payment_method: Mapped[str]
    stripe_customer_id: Mapped[str | None]
    stripe_subscription_id: Mapped[str | None] = mapped_column(unique=True)
    stripe_price_id: Mapped[str | None]
    current_period_start: Mapped[datetime | None]
    current_period_end: Mapped[datetime | None]
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    canceled_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    trial_end: Mapped[datetime | None]
    past_due_since: Mapped[datetime | None]
    #: A manual subscription's contract price per interval, in minor units of `currency`
    #: (None for Stripe and crypto subscriptions: they are billed at the catalog's prices).
    price_cents: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None]
    #: The upstream object's own time (e.g. Stripe's event `created`), to refuse older updates.
    source_updated_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class UsageMetric(Base):
    """A usage counter: `period` is "YYYY-MM" for monthly metrics and "" for gauges."""

    __tablename__ = "usage_metrics"

    account_id: Mapped[str] = mapped_column(primary_key=True)
    metric: Mapped[str] = mapped_column(primary_key=True)
    period: Mapped[str] = mapped_column(primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TokenRequirement(Base):
    """A token-gating rule for a channel (the seed's fields)."""

    __tablename__ = "token_requirements"
    __table_args__ = (CheckConstraint(_one_of("token_type", TOKEN_TYPES), name="token_type"),)

    id: Mapped[str] = mapped_column(primary_key=True)
    channel_id: Mapped[str] = mapped_column(index=True)
    role_id: Mapped[str | None]
    feature_id: Mapped[str | None]
    token_type: Mapped[str]
    contract_address: Mapped[str]
    network: Mapped[str]
    #: A decimal string in the token's units (never a float).
    min_balance: Mapped[str | None]
    token_ids: Mapped[list[str]] = mapped_column(default=list)
    min_token_count: Mapped[int | None] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(default="")
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AccountOverride(Base):
    """An enterprise custom limit (`value` None = unlimited) or a feature grant or revoke."""

    __tablename__ = "account_overrides"
    __table_args__ = (
        UniqueConstraint("account_id", "kind", "key"),
        CheckConstraint(_one_of("kind", OVERRIDE_KINDS), name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    kind: Mapped[str]
    key: Mapped[str]
    value: Mapped[int | None] = mapped_column(BigInteger)
    expires_at: Mapped[datetime | None]
    created_by: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    reason: Mapped[str] = mapped_column(Text, default="")


class OverrideAudit(Base):
    """Who changed an account's overrides, when, and from what to what."""

    __tablename__ = "override_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(index=True)
    action: Mapped[str]
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    #: The caller's idempotency key for the change (AdminService's manual subscriptions): a
    #: retry finds the first change's entry instead of changing again.
    request_id: Mapped[str | None] = mapped_column(index=True, unique=True)


class WebhookEvent(Base):
    """An external event (e.g. a Stripe event id) already received, so a retry is applied once."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(primary_key=True)
    source: Mapped[str]
    type: Mapped[str]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None]
    status: Mapped[str]
    error: Mapped[str | None] = mapped_column(Text)


# --- usage ---


class UsageEvent(Base):
    """One counted usage event, kept for the idempotency window so a retry is counted once.

    `total` is the metric's total in `period` right after this event: a duplicate gets it back
    as the first answer. Times are unix milliseconds: this table takes a row per event and is
    written in bulk, so it avoids per-row conversions.
    """

    __tablename__ = "usage_events"

    account_id: Mapped[str] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(primary_key=True)
    metric: Mapped[str]
    delta: Mapped[int] = mapped_column(BigInteger)
    period: Mapped[str]
    total: Mapped[int] = mapped_column(BigInteger)
    occurred_at_ms: Mapped[int] = mapped_column(BigInteger)
    received_at_ms: Mapped[int] = mapped_column(BigInteger)

    # PostgreSQL prunes by receipt time through this index; SQLite walks the rows in rowid
    # order, which is receipt order there, and saves the index's insert per event (0011).
    __table_args__ = (
        Index("ix_usage_events_received_at_ms", "received_at_ms").ddl_if(dialect="postgresql"),
    )


class UsageThreshold(Base):
    """A threshold level reached by an account's metric in a period, recorded once."""

    __tablename__ = "usage_thresholds"

    account_id: Mapped[str] = mapped_column(primary_key=True)
    metric: Mapped[str] = mapped_column(primary_key=True)
    period: Mapped[str] = mapped_column(primary_key=True)
    level: Mapped[int] = mapped_column(primary_key=True)
    current: Mapped[int] = mapped_column(BigInteger)
    limit_value: Mapped[int] = mapped_column(BigInteger)
    crossed_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- billing (stripe) ---

#: Statuses of a Checkout session's payment, as Stripe names them.
CHECKOUT_PAYMENT_STATUSES = ("unpaid", "paid", "no_payment_required")


class StripeCheckoutSession(Base):
    """A Checkout session this service started, so its completion links back to the account.

    While `payment_status` is "unpaid" (a delayed payment method) its subscription grants nothing.
    """

    __tablename__ = "stripe_checkout_sessions"
    __table_args__ = (
        CheckConstraint(
            _one_of("payment_status", CHECKOUT_PAYMENT_STATUSES), name="payment_status"
        ),
    )

    id: Mapped[str] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(index=True)
    user_id: Mapped[str | None]
    plan_id: Mapped[str]
    interval: Mapped[str]
    stripe_price_id: Mapped[str]
    stripe_customer_id: Mapped[str | None]
    stripe_subscription_id: Mapped[str | None] = mapped_column(index=True)
    status: Mapped[str] = mapped_column(default="open")
    payment_status: Mapped[str] = mapped_column(default="unpaid")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PaidInvoice(Base):
    """A paid invoice: a revenue fact (amounts in minor units of `currency`)."""

    __tablename__ = "paid_invoices"
    __table_args__ = (
        CheckConstraint(_one_of("payment_method", PAYMENT_METHODS), name="payment_method"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stripe_invoice_id: Mapped[str] = mapped_column(unique=True)
    account_id: Mapped[str] = mapped_column(index=True)
    subscription_id: Mapped[str | None]
    stripe_customer_id: Mapped[str | None]
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str]
    payment_method: Mapped[str]
    paid_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ManualInvoice(Base):
    """An invoice of a manual (sales-led) subscription an admin recorded as paid: a revenue fact
    of payment method `manual`. `reference` (the sales system's invoice number) is unique, so
    the same invoice is never counted twice."""

    __tablename__ = "manual_invoices"

    id: Mapped[str] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(unique=True)
    account_id: Mapped[str] = mapped_column(index=True)
    subscription_id: Mapped[str] = mapped_column(index=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str]
    paid_at: Mapped[datetime] = mapped_column(index=True)
    recorded_by: Mapped[str]
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FailedPayment(Base):
    """A failed attempt to pay an invoice; `next_payment_attempt` None = Stripe stopped retrying."""

    __tablename__ = "failed_payments"
    __table_args__ = (UniqueConstraint("stripe_invoice_id", "attempt_count"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stripe_invoice_id: Mapped[str]
    attempt_count: Mapped[int] = mapped_column(Integer)
    account_id: Mapped[str] = mapped_column(index=True)
    subscription_id: Mapped[str | None]
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str]
    next_payment_attempt: Mapped[datetime | None]
    failed_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- token gating ---

WALLET_TYPES = ("eoa", "contract")


class WalletLink(Base):
    """A wallet whose ownership a user proved with a signed EIP-4361 challenge.

    An EOA signs for its address on every EVM chain; a contract wallet (EIP-1271) only on
    `chain_id`, where its code decided.
    """

    __tablename__ = "wallet_links"
    __table_args__ = (
        UniqueConstraint("user_id", "address"),
        CheckConstraint(_one_of("wallet_type", WALLET_TYPES), name="wallet_type"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(index=True)
    #: EIP-55 checksummed.
    address: Mapped[str]
    chain_id: Mapped[int] = mapped_column(BigInteger)
    wallet_type: Mapped[str]
    verified_at: Mapped[datetime] = mapped_column(default=utcnow)


class WalletChallenge(Base):
    """An issued EIP-4361 message; its nonce is spent (`used_at`) in the transaction that links."""

    __tablename__ = "wallet_challenges"

    nonce: Mapped[str] = mapped_column(primary_key=True)
    user_id: Mapped[str]
    address: Mapped[str]
    chain_id: Mapped[int] = mapped_column(BigInteger)
    message: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]


class TokenAccessGrant(Base):
    """The last channel-access decision for a user and/or a set of wallets, so the periodic
    re-verification knows whom to check again and can tell a revocation from no change."""

    __tablename__ = "token_access_grants"
    __table_args__ = (UniqueConstraint("channel_id", "user_id", "wallets_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel_id: Mapped[str] = mapped_column(index=True)
    #: "" when the check named wallets only.
    user_id: Mapped[str] = mapped_column(default="")
    #: The explicitly given wallets, sorted and comma-joined ("" for none): part of the key.
    wallets_key: Mapped[str] = mapped_column(Text, default="")
    wallet_addresses: Mapped[list[str]] = mapped_column(default=list)
    granted: Mapped[bool] = mapped_column(Boolean, index=True)
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- change feed ---


class EntitlementChange(Base):
    """One entitlement change of an account, written with its revision bump; every worker and
    replica polls the recent ones to drop stale cache entries and tell its watchers."""

    __tablename__ = "entitlement_changes"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    account_id: Mapped[str]
    revision: Mapped[int] = mapped_column(BigInteger)
    changed_at_ms: Mapped[int] = mapped_column(BigInteger, index=True)


class TokenAccessChange(Base):
    """One token-gated access change (a re-verification revoked or restored it), written by the
    replica that found it; every replica polls the recent ones to tell its watchers."""

    __tablename__ = "token_access_changes"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    channel_id: Mapped[str]
    #: "" when the access was checked for wallets only.
    user_id: Mapped[str]
    wallet_addresses: Mapped[list[str]]
    granted: Mapped[bool] = mapped_column(Boolean)
    unmet_requirement_ids: Mapped[list[str]]
    changed_at_ms: Mapped[int] = mapped_column(BigInteger, index=True)


# --- crypto payments ---

CRYPTO_PAYMENT_STATUSES = (
    "pending",
    "processing",
    "confirmed",
    "expired",
    "underpaid",
    "overpaid",
    "paid_late",
)
CRYPTO_TRANSFER_STATUSES = ("seen", "confirmed", "reorged")


CRYPTO_RESOLUTIONS = ("credited", "refunded")
#: On a payment, also "admin_credit": the payment an admin's credit activated through.
CRYPTO_PAYMENT_RESOLUTIONS = (*CRYPTO_RESOLUTIONS, "admin_credit")
CRYPTO_UNMATCHED_KINDS = ("unmatched", "wrong_currency", "wrong_payer", "unsupported")


class CryptoPaymentRow(Base):
    """A quoted crypto payment. Amounts in base units are decimal strings (uint256 does not fit
    a BIGINT). `open_slot` is the payment's unique amount fingerprint while it can still be
    paid, NULL after: unique per (network, pay_to_address) among open payments, across every
    currency, so a transfer's digits name one quote whatever currency it was sent in."""

    __tablename__ = "crypto_payments"
    __table_args__ = (
        UniqueConstraint("network", "pay_to_address", "open_slot"),
        CheckConstraint(_one_of("status", CRYPTO_PAYMENT_STATUSES), name="status"),
        CheckConstraint(_one_of("resolution", CRYPTO_PAYMENT_RESOLUTIONS), name="resolution"),
    )

    id: Mapped[str] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(index=True)
    plan_id: Mapped[str]
    interval: Mapped[str]
    network: Mapped[str]
    chain_id: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str]
    #: "" for native ETH.
    token_contract: Mapped[str]
    pay_to_address: Mapped[str]
    amount_base_units: Mapped[str]
    decimals: Mapped[int] = mapped_column(Integer)
    slot: Mapped[int] = mapped_column(Integer)
    open_slot: Mapped[int | None] = mapped_column(Integer)
    price_cents: Mapped[int] = mapped_column(BigInteger)
    #: The USD price of one ETH locked in the quote (ETH only).
    eth_usd_rate: Mapped[str | None]
    status: Mapped[str] = mapped_column(index=True)
    received_base_units: Mapped[str] = mapped_column(default="0")
    tx_hash: Mapped[str | None]
    confirmations: Mapped[int] = mapped_column(BigInteger, default=0)
    required_confirmations: Mapped[int] = mapped_column(Integer)
    #: The chain head when the quote was made: the watcher never needs to look further back.
    created_block: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    confirmed_at: Mapped[datetime | None]
    #: The subscription this payment activated, and its period end before (None: it was new).
    subscription_id: Mapped[str | None]
    previous_period_end: Mapped[datetime | None]
    #: "none", "pending" (to apply), "applied", "revoked".
    activation: Mapped[str] = mapped_column(default="none")
    #: What happened that an admin should know (reorgs, excess amounts).
    admin_note: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: When set, only transfers from this address pay the quote (checksummed).
    payer_address: Mapped[str | None]
    #: What arrived beyond the amount, in US cents at the quote's rate (0 unless overpaid).
    excess_cents: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    #: An admin's decision on this payment's money ("credited", "refunded"), or
    #: "admin_credit" for the payment a credit activated through; the chain no longer changes
    #: a resolved payment.
    resolution: Mapped[str | None]


class CryptoTransferRow(Base):
    """A transfer matched to a payment; recorded once per (chain_id, tx_hash, log_position):
    its position among its own transaction's logs (-1 for a native transfer), which a reorg
    that re-mines the transaction elsewhere does not change (`log_index`, the position in the
    block, does)."""

    __tablename__ = "crypto_transfers"
    __table_args__ = (
        UniqueConstraint("chain_id", "tx_hash", "log_position"),
        CheckConstraint(_one_of("status", CRYPTO_TRANSFER_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("crypto_payments.id"), index=True)
    network: Mapped[str]
    chain_id: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str]
    log_index: Mapped[int] = mapped_column(Integer)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str]
    block_time: Mapped[datetime]
    token_contract: Mapped[str]
    from_address: Mapped[str]
    value_base_units: Mapped[str]
    status: Mapped[str] = mapped_column(index=True)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[datetime | None]
    log_position: Mapped[int] = mapped_column(Integer)


class CryptoUnmatchedTransfer(Base):
    """A transfer to the receiving address that paid no payment, kept for an admin; identified
    like a matched one by (chain_id, tx_hash, log_position)."""

    __tablename__ = "crypto_unmatched_transfers"
    __table_args__ = (
        UniqueConstraint("chain_id", "tx_hash", "log_position"),
        CheckConstraint(_one_of("kind", CRYPTO_UNMATCHED_KINDS), name="kind"),
        CheckConstraint(_one_of("resolution", CRYPTO_RESOLUTIONS), name="resolution"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    network: Mapped[str]
    chain_id: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str]
    log_index: Mapped[int] = mapped_column(Integer)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str]
    currency: Mapped[str]
    token_contract: Mapped[str]
    from_address: Mapped[str]
    to_address: Mapped[str]
    value_base_units: Mapped[str]
    reason: Mapped[str] = mapped_column(Text)
    reorged: Mapped[bool] = mapped_column(Boolean, default=False)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    log_position: Mapped[int] = mapped_column(Integer)
    #: Why it paid nothing: "wrong_currency" (its digits name a quote in another currency),
    #: "wrong_payer" (the quote names another payer), "unsupported" (a coin not accepted),
    #: "unmatched" (no open quote carries its digits).
    kind: Mapped[str] = mapped_column(default="unmatched", server_default="unmatched")
    #: The quote its digits name, when there is one (wrong currency or payer).
    named_payment_id: Mapped[str | None]
    #: An admin's decision ("credited", "refunded").
    resolution: Mapped[str | None]


class CryptoWatchCursor(Base):
    """The last block a network's watcher processed, with its hash (to notice a reorg)."""

    __tablename__ = "crypto_watch_cursors"

    network: Mapped[str] = mapped_column(primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CryptoRevenue(Base):
    """Revenue facts: one row per confirmed crypto payment, valued in USD cents as quoted
    (removed again if a reorg undoes the payment)."""

    __tablename__ = "crypto_revenue"

    payment_id: Mapped[str] = mapped_column(ForeignKey("crypto_payments.id"), primary_key=True)
    account_id: Mapped[str] = mapped_column(index=True)
    subscription_id: Mapped[str | None]
    plan_id: Mapped[str]
    interval: Mapped[str]
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    #: The crypto currency paid ("ETH", "USDC", "USDT"); amount_cents is always USD.
    currency: Mapped[str]
    network: Mapped[str]
    chain_id: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str]
    confirmed_at: Mapped[datetime] = mapped_column(index=True)


class CryptoResolution(Base):
    """An admin's decision on money received without access (an underpaid, overpaid or late
    payment, or an unmatched transfer): credited to an account and plan, or refunded. One per
    item; the same decision is also written to `override_audit`."""

    __tablename__ = "crypto_resolutions"
    __table_args__ = (CheckConstraint(_one_of("action", CRYPTO_RESOLUTIONS), name="action"),)

    #: The item: a payment id ("cp_...") or an unmatched transfer ("ut_<id>").
    item_id: Mapped[str] = mapped_column(primary_key=True)
    action: Mapped[str]
    #: The account and plan credited (empty for a refund).
    account_id: Mapped[str]
    plan_id: Mapped[str]
    interval: Mapped[str]
    #: The payment whose activation the credit went through.
    payment_id: Mapped[str | None]
    #: The refund's transaction (empty for a credit).
    refund_tx_hash: Mapped[str]
    actor: Mapped[str]
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- outbound events (transactional outbox) ---

DELIVERY_STATUSES = ("pending", "delivered", "failed")


class OutboxEvent(Base):
    """An outbound event, written in the transaction of the change it reports; `seq` orders
    them, `dedup_key` makes a producer's event unique (a threshold level, a renewal period).
    `fanned_out` turns true once its deliveries (one per subscribed endpoint) exist."""

    __tablename__ = "outbox_events"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    id: Mapped[str] = mapped_column(unique=True)
    type: Mapped[str]
    account_id: Mapped[str] = mapped_column(index=True)
    occurred_at_ms: Mapped[int] = mapped_column(BigInteger)
    #: The JSON body sent, exactly as signed.
    body: Mapped[str] = mapped_column(Text)
    dedup_key: Mapped[str | None] = mapped_column(unique=True)
    fanned_out: Mapped[bool] = mapped_column(Boolean, default=False, index=True)


class EventDelivery(Base):
    """One event to one endpoint: claimed by a dispatcher (a lease in `next_attempt_ms`),
    retried with backoff until delivered or failed."""

    __tablename__ = "event_deliveries"
    __table_args__ = (
        UniqueConstraint("event_seq", "endpoint"),
        CheckConstraint(_one_of("status", DELIVERY_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_seq: Mapped[int] = mapped_column(BigInteger, ForeignKey("outbox_events.seq"))
    endpoint: Mapped[str]
    account_id: Mapped[str]
    status: Mapped[str] = mapped_column(index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    delivered_at_ms: Mapped[int | None] = mapped_column(BigInteger)
