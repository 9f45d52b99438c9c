"""Usage keys on SQLite without the receipt-time index: pruning walks the rows in rowid order.

The index on `usage_events.received_at_ms` cost SQLite a second B-tree insert per counted event
(0.4-1.0 µs of the ~4.5 µs an event's key row costs, measured in BENCHMARKS.md). On SQLite the
rows' rowids follow their receipt: one writer at a time (BEGIN IMMEDIATE) takes its receipt time
inside the write lock and SQLite gives new rows the largest rowid plus one, so the oldest rows
are the first rowids and pruning reads them from there (`_SqliteSql.prune`). PostgreSQL keeps
the index (no row order to walk there).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_usage_events_received_at_ms"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index(_INDEX, table_name="usage_events")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.create_index(_INDEX, "usage_events", ["received_at_ms"], unique=False)
