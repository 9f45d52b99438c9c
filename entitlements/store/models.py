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
    "OverrideAudit",
    "Subscription",
    "TokenRequirement",
    "UTCDateTime",
    "UsageMetric",
    "WebhookEvent",
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
    actor: Mapped[str]
    action: Mapped[str]
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


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
