"""Outbound events: the transactional outbox and one delivery row per event and endpoint.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "outbox_events",
        sa.Column("seq", _ID, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("occurred_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("dedup_key", sa.String(), nullable=True),
        sa.Column("fanned_out", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_outbox_events")),
        sa.UniqueConstraint("id", name=op.f("uq_outbox_events_id")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_outbox_events_dedup_key")),
    )
    op.create_index(
        op.f("ix_outbox_events_account_id"), "outbox_events", ["account_id"], unique=False
    )
    op.create_index(
        op.f("ix_outbox_events_fanned_out"), "outbox_events", ["fanned_out"], unique=False
    )
    op.create_table(
        "event_deliveries",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("event_seq", sa.BigInteger(), nullable=False),
        sa.Column("endpoint", sa.String(), nullable=False),
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("delivered_at_ms", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failed')",
            name=op.f("ck_event_deliveries_status"),
        ),
        sa.ForeignKeyConstraint(
            ["event_seq"],
            ["outbox_events.seq"],
            name=op.f("fk_event_deliveries_event_seq_outbox_events"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_deliveries")),
        sa.UniqueConstraint(
            "event_seq", "endpoint", name=op.f("uq_event_deliveries_event_seq_endpoint")
        ),
    )
    op.create_index(
        op.f("ix_event_deliveries_status"), "event_deliveries", ["status"], unique=False
    )
    op.create_index(
        op.f("ix_event_deliveries_next_attempt_ms"),
        "event_deliveries",
        ["next_attempt_ms"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_event_deliveries_next_attempt_ms"), table_name="event_deliveries")
    op.drop_index(op.f("ix_event_deliveries_status"), table_name="event_deliveries")
    op.drop_table("event_deliveries")
    op.drop_index(op.f("ix_outbox_events_fanned_out"), table_name="outbox_events")
    op.drop_index(op.f("ix_outbox_events_account_id"), table_name="outbox_events")
    op.drop_table("outbox_events")
