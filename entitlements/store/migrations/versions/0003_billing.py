"""Billing (Stripe): checkout sessions started here, paid invoices and failed payments.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def timestamp(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "stripe_checkout_sessions",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=True),
        sa.Column("plan_id", sa.String(), nullable=False),
        sa.Column("interval", sa.String(), nullable=False),
        sa.Column("stripe_price_id", sa.String(), nullable=False),
        sa.Column("stripe_customer_id", sa.String(), nullable=True),
        sa.Column("stripe_subscription_id", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("payment_status", sa.String(), nullable=False),
        timestamp("created_at"),
        timestamp("updated_at"),
        sa.CheckConstraint(
            "payment_status IN ('unpaid', 'paid', 'no_payment_required')",
            name=op.f("ck_stripe_checkout_sessions_payment_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_checkout_sessions")),
    )
    op.create_index(
        op.f("ix_stripe_checkout_sessions_account_id"), "stripe_checkout_sessions", ["account_id"]
    )
    op.create_index(
        op.f("ix_stripe_checkout_sessions_stripe_subscription_id"),
        "stripe_checkout_sessions",
        ["stripe_subscription_id"],
    )

    op.create_table(
        "paid_invoices",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("stripe_invoice_id", sa.String(), nullable=False),
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("subscription_id", sa.String(), nullable=True),
        sa.Column("stripe_customer_id", sa.String(), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(), nullable=False),
        sa.Column("payment_method", sa.String(), nullable=False),
        timestamp("paid_at"),
        timestamp("created_at"),
        sa.CheckConstraint(
            "payment_method IN ('card', 'crypto', 'manual')",
            name=op.f("ck_paid_invoices_payment_method"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_paid_invoices")),
        sa.UniqueConstraint("stripe_invoice_id", name=op.f("uq_paid_invoices_stripe_invoice_id")),
    )
    op.create_index(op.f("ix_paid_invoices_account_id"), "paid_invoices", ["account_id"])
    op.create_index(op.f("ix_paid_invoices_paid_at"), "paid_invoices", ["paid_at"])

    op.create_table(
        "failed_payments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("stripe_invoice_id", sa.String(), nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("subscription_id", sa.String(), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(), nullable=False),
        timestamp("next_payment_attempt", nullable=True),
        timestamp("failed_at"),
        timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_failed_payments")),
        sa.UniqueConstraint(
            "stripe_invoice_id",
            "attempt_count",
            name=op.f("uq_failed_payments_stripe_invoice_id_attempt_count"),
        ),
    )
    op.create_index(op.f("ix_failed_payments_account_id"), "failed_payments", ["account_id"])
    op.create_index(op.f("ix_failed_payments_failed_at"), "failed_payments", ["failed_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_failed_payments_failed_at"), table_name="failed_payments")
    op.drop_index(op.f("ix_failed_payments_account_id"), table_name="failed_payments")
    op.drop_table("failed_payments")
    op.drop_index(op.f("ix_paid_invoices_paid_at"), table_name="paid_invoices")
    op.drop_index(op.f("ix_paid_invoices_account_id"), table_name="paid_invoices")
    op.drop_table("paid_invoices")
    op.drop_index(
        op.f("ix_stripe_checkout_sessions_stripe_subscription_id"),
        table_name="stripe_checkout_sessions",
    )
    op.drop_index(
        op.f("ix_stripe_checkout_sessions_account_id"), table_name="stripe_checkout_sessions"
    )
    op.drop_table("stripe_checkout_sessions")
