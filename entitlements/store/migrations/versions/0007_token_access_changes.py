"""Token access changes in the change feed, so every replica pushes them to its watchers.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "token_access_changes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("channel_id", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("wallet_addresses", sa.JSON(), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("unmet_requirement_ids", sa.JSON(), nullable=False),
        sa.Column("changed_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_token_access_changes")),
    )
    op.create_index(
        op.f("ix_token_access_changes_changed_at_ms"),
        "token_access_changes",
        ["changed_at_ms"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_token_access_changes_changed_at_ms"), table_name="token_access_changes")
    op.drop_table("token_access_changes")
