"""Crypto payments: quotes, matched and unmatched transfers, watcher cursors, revenue facts.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "crypto_payments",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("plan_id", sa.String(), nullable=False),
        sa.Column("interval", sa.String(), nullable=False),
        sa.Column("network", sa.String(), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(), nullable=False),
        sa.Column("token_contract", sa.String(), nullable=False),
        sa.Column("pay_to_address", sa.String(), nullable=False),
        sa.Column("amount_base_units", sa.String(), nullable=False),
        sa.Column("decimals", sa.Integer(), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("open_slot", sa.Integer(), nullable=True),
        sa.Column("price_cents", sa.BigInteger(), nullable=False),
        sa.Column("eth_usd_rate", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("received_base_units", sa.String(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=True),
        sa.Column("confirmations", sa.BigInteger(), nullable=False),
        sa.Column("required_confirmations", sa.Integer(), nullable=False),
        sa.Column("created_block", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("subscription_id", sa.String(), nullable=True),
        sa.Column("previous_period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("activation", sa.String(), nullable=False),
        sa.Column("admin_note", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'confirmed', 'expired', 'underpaid', "
            "'overpaid', 'paid_late')",
            name=op.f("ck_crypto_payments_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crypto_payments")),
        sa.UniqueConstraint(
            "network",
            "currency",
            "pay_to_address",
            "open_slot",
            name=op.f("uq_crypto_payments_network_currency_pay_to_address_open_slot"),
        ),
    )
    op.create_index(
        op.f("ix_crypto_payments_account_id"), "crypto_payments", ["account_id"], unique=False
    )
    op.create_index(
        op.f("ix_crypto_payments_expires_at"), "crypto_payments", ["expires_at"], unique=False
    )
    op.create_index(op.f("ix_crypto_payments_status"), "crypto_payments", ["status"], unique=False)
    op.create_table(
        "crypto_unmatched_transfers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("network", sa.String(), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(), nullable=False),
        sa.Column("currency", sa.String(), nullable=False),
        sa.Column("token_contract", sa.String(), nullable=False),
        sa.Column("from_address", sa.String(), nullable=False),
        sa.Column("to_address", sa.String(), nullable=False),
        sa.Column("value_base_units", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("reorged", sa.Boolean(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crypto_unmatched_transfers")),
        sa.UniqueConstraint(
            "chain_id",
            "tx_hash",
            "log_index",
            name=op.f("uq_crypto_unmatched_transfers_chain_id_tx_hash_log_index"),
        ),
    )
    op.create_table(
        "crypto_watch_cursors",
        sa.Column("network", sa.String(), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("network", name=op.f("pk_crypto_watch_cursors")),
    )
    op.create_table(
        "crypto_revenue",
        sa.Column("payment_id", sa.String(), nullable=False),
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("subscription_id", sa.String(), nullable=True),
        sa.Column("plan_id", sa.String(), nullable=False),
        sa.Column("interval", sa.String(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(), nullable=False),
        sa.Column("network", sa.String(), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["crypto_payments.id"],
            name=op.f("fk_crypto_revenue_payment_id_crypto_payments"),
        ),
        sa.PrimaryKeyConstraint("payment_id", name=op.f("pk_crypto_revenue")),
    )
    op.create_index(
        op.f("ix_crypto_revenue_account_id"), "crypto_revenue", ["account_id"], unique=False
    )
    op.create_index(
        op.f("ix_crypto_revenue_confirmed_at"), "crypto_revenue", ["confirmed_at"], unique=False
    )
    op.create_table(
        "crypto_transfers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("payment_id", sa.String(), nullable=False),
        sa.Column("network", sa.String(), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(), nullable=False),
        sa.Column("block_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("token_contract", sa.String(), nullable=False),
        sa.Column("from_address", sa.String(), nullable=False),
        sa.Column("value_base_units", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('seen', 'confirmed', 'reorged')", name=op.f("ck_crypto_transfers_status")
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["crypto_payments.id"],
            name=op.f("fk_crypto_transfers_payment_id_crypto_payments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crypto_transfers")),
        sa.UniqueConstraint(
            "chain_id",
            "tx_hash",
            "log_index",
            name=op.f("uq_crypto_transfers_chain_id_tx_hash_log_index"),
        ),
    )
    op.create_index(
        op.f("ix_crypto_transfers_payment_id"), "crypto_transfers", ["payment_id"], unique=False
    )
    op.create_index(
        op.f("ix_crypto_transfers_status"), "crypto_transfers", ["status"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_crypto_transfers_status"), table_name="crypto_transfers")
    op.drop_index(op.f("ix_crypto_transfers_payment_id"), table_name="crypto_transfers")
    op.drop_table("crypto_transfers")
    op.drop_index(op.f("ix_crypto_revenue_confirmed_at"), table_name="crypto_revenue")
    op.drop_index(op.f("ix_crypto_revenue_account_id"), table_name="crypto_revenue")
    op.drop_table("crypto_revenue")
    op.drop_table("crypto_watch_cursors")
    op.drop_table("crypto_unmatched_transfers")
    op.drop_index(op.f("ix_crypto_payments_status"), table_name="crypto_payments")
    op.drop_index(op.f("ix_crypto_payments_expires_at"), table_name="crypto_payments")
    op.drop_index(op.f("ix_crypto_payments_account_id"), table_name="crypto_payments")
    op.drop_table("crypto_payments")
