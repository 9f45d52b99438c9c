"""Token gating: wallet links, wallet challenges (SIWE nonces) and channel access grants.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def timestamp(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "wallet_links",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("address", sa.String(), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("wallet_type", sa.String(), nullable=False),
        timestamp("verified_at"),
        sa.CheckConstraint(
            "wallet_type IN ('eoa', 'contract')", name=op.f("ck_wallet_links_wallet_type")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_links")),
        sa.UniqueConstraint("user_id", "address", name=op.f("uq_wallet_links_user_id_address")),
    )
    op.create_index(op.f("ix_wallet_links_user_id"), "wallet_links", ["user_id"])

    op.create_table(
        "wallet_challenges",
        sa.Column("nonce", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("address", sa.String(), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        timestamp("issued_at"),
        timestamp("expires_at"),
        timestamp("used_at", nullable=True),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_wallet_challenges")),
    )
    op.create_index(op.f("ix_wallet_challenges_expires_at"), "wallet_challenges", ["expires_at"])

    op.create_table(
        "token_access_grants",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("channel_id", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("wallets_key", sa.Text(), nullable=False),
        sa.Column("wallet_addresses", sa.JSON(), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        timestamp("checked_at"),
        timestamp("changed_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_token_access_grants")),
        sa.UniqueConstraint(
            "channel_id",
            "user_id",
            "wallets_key",
            name=op.f("uq_token_access_grants_channel_id_user_id_wallets_key"),
        ),
    )
    op.create_index(
        op.f("ix_token_access_grants_channel_id"), "token_access_grants", ["channel_id"]
    )
    op.create_index(op.f("ix_token_access_grants_granted"), "token_access_grants", ["granted"])


def downgrade() -> None:
    op.drop_index(op.f("ix_token_access_grants_granted"), table_name="token_access_grants")
    op.drop_index(op.f("ix_token_access_grants_channel_id"), table_name="token_access_grants")
    op.drop_table("token_access_grants")
    op.drop_index(op.f("ix_wallet_challenges_expires_at"), table_name="wallet_challenges")
    op.drop_table("wallet_challenges")
    op.drop_index(op.f("ix_wallet_links_user_id"), table_name="wallet_links")
    op.drop_table("wallet_links")
