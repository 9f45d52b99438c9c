"""Change feed: every entitlement change, for cache coherence across workers and replicas.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "entitlement_changes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("changed_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entitlement_changes")),
    )
    op.create_index(
        op.f("ix_entitlement_changes_changed_at_ms"),
        "entitlement_changes",
        ["changed_at_ms"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_entitlement_changes_changed_at_ms"), table_name="entitlement_changes")
    op.drop_table("entitlement_changes")
