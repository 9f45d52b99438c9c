"""Initial schema: accounts, subscriptions, usage, token requirements, overrides, webhook events.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SUBSCRIPTION_STATUSES = (
    "'incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'canceled', "
    "'unpaid', 'paused'"
)


def timestamp(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("revision", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("stripe_customer_id", sa.String(), nullable=True),
        timestamp("created_at"),
        timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("stripe_customer_id", name=op.f("uq_accounts_stripe_customer_id")),
    )

    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=True),
        sa.Column("plan_id", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("interval", sa.String(), nullable=False),
        sa.Column("payment_method", sa.String(), nullable=False),
        sa.Column("stripe_customer_id", sa.String(), nullable=True),
        sa.Column("stripe_subscription_id", sa.String(), nullable=True),
        sa.Column("stripe_price_id", sa.String(), nullable=True),
        timestamp("current_period_start", nullable=True),
        timestamp("current_period_end", nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        timestamp("canceled_at", nullable=True),
        timestamp("ended_at", nullable=True),
        timestamp("trial_end", nullable=True),
        timestamp("past_due_since", nullable=True),
        timestamp("source_updated_at", nullable=True),
        timestamp("created_at"),
        timestamp("updated_at"),
        sa.CheckConstraint(
            f"status IN ({SUBSCRIPTION_STATUSES})", name=op.f("ck_subscriptions_status")
        ),
        sa.CheckConstraint("interval IN ('month', 'year')", name=op.f("ck_subscriptions_interval")),
        sa.CheckConstraint(
            "payment_method IN ('card', 'crypto', 'manual')",
            name=op.f("ck_subscriptions_payment_method"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_subscriptions_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
        sa.UniqueConstraint(
            "stripe_subscription_id", name=op.f("uq_subscriptions_stripe_subscription_id")
        ),
    )
    op.create_index(op.f("ix_subscriptions_account_id"), "subscriptions", ["account_id"])

    op.create_table(
        "usage_metrics",
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("metric", sa.String(), nullable=False),
        sa.Column("period", sa.String(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        timestamp("updated_at"),
        sa.PrimaryKeyConstraint("account_id", "metric", "period", name=op.f("pk_usage_metrics")),
    )

    op.create_table(
        "token_requirements",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("channel_id", sa.String(), nullable=False),
        sa.Column("role_id", sa.String(), nullable=True),
        sa.Column("feature_id", sa.String(), nullable=True),
        sa.Column("token_type", sa.String(), nullable=False),
        sa.Column("contract_address", sa.String(), nullable=False),
        sa.Column("network", sa.String(), nullable=False),
        sa.Column("min_balance", sa.String(), nullable=True),
        sa.Column("token_ids", sa.JSON(), nullable=False),
        sa.Column("min_token_count", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        timestamp("created_at"),
        timestamp("updated_at"),
        sa.CheckConstraint(
            "token_type IN ('ERC20', 'ERC721', 'ERC1155')",
            name=op.f("ck_token_requirements_token_type"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_token_requirements")),
    )
    op.create_index(op.f("ix_token_requirements_channel_id"), "token_requirements", ["channel_id"])

    op.create_table(
        "account_overrides",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=True),
        timestamp("expires_at", nullable=True),
        sa.Column("created_by", sa.String(), nullable=False),
        timestamp("created_at"),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('limit', 'feature_grant', 'feature_revoke')",
            name=op.f("ck_account_overrides_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_account_overrides_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_overrides")),
        sa.UniqueConstraint(
            "account_id", "kind", "key", name=op.f("uq_account_overrides_account_id_kind_key")
        ),
    )
    op.create_index(op.f("ix_account_overrides_account_id"), "account_overrides", ["account_id"])

    op.create_table(
        "override_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_override_audit")),
    )
    op.create_index(op.f("ix_override_audit_account_id"), "override_audit", ["account_id"])

    op.create_table(
        "webhook_events",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        timestamp("received_at"),
        timestamp("processed_at", nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
    )


def downgrade() -> None:
    op.drop_table("webhook_events")
    op.drop_index(op.f("ix_override_audit_account_id"), table_name="override_audit")
    op.drop_table("override_audit")
    op.drop_index(op.f("ix_account_overrides_account_id"), table_name="account_overrides")
    op.drop_table("account_overrides")
    op.drop_index(op.f("ix_token_requirements_channel_id"), table_name="token_requirements")
    op.drop_table("token_requirements")
    op.drop_table("usage_metrics")
    op.drop_index(op.f("ix_subscriptions_account_id"), table_name="subscriptions")
    op.drop_table("subscriptions")
    op.drop_table("accounts")
