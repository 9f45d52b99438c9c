"""Sales-led plans and a readable audit log: a manual subscription's contract price and
currency, manual invoices paid, and the audit log's idempotency key and listing indexes.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("price_cents", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("currency", sa.String(), nullable=True))
    with op.batch_alter_table("override_audit") as batch:
        batch.add_column(sa.Column("request_id", sa.String(), nullable=True))
    op.create_index(
        op.f("ix_override_audit_request_id"), "override_audit", ["request_id"], unique=True
    )
    op.create_index(op.f("ix_override_audit_actor"), "override_audit", ["actor"], unique=False)
    op.create_index(
        op.f("ix_override_audit_created_at"), "override_audit", ["created_at"], unique=False
    )
    op.create_table(
        "manual_invoices",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("reference", sa.String(), nullable=False),
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("subscription_id", sa.String(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manual_invoices")),
        sa.UniqueConstraint("reference", name=op.f("uq_manual_invoices_reference")),
    )
    for column in ("account_id", "subscription_id", "paid_at"):
        op.create_index(
            op.f(f"ix_manual_invoices_{column}"), "manual_invoices", [column], unique=False
        )


def downgrade() -> None:
    for column in ("paid_at", "subscription_id", "account_id"):
        op.drop_index(op.f(f"ix_manual_invoices_{column}"), table_name="manual_invoices")
    op.drop_table("manual_invoices")
    op.drop_index(op.f("ix_override_audit_created_at"), table_name="override_audit")
    op.drop_index(op.f("ix_override_audit_actor"), table_name="override_audit")
    op.drop_index(op.f("ix_override_audit_request_id"), table_name="override_audit")
    with op.batch_alter_table("override_audit") as batch:
        batch.drop_column("request_id")
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("currency")
        batch.drop_column("price_cents")
