"""Crypto payment integrity: quote amounts unique across currencies, an optional payer address,
transfers identified by their position in their transaction, unmatched transfers' kinds, and
admin resolutions of money received without access.

- `crypto_payments`: the open-slot constraint drops `currency`; where two open quotes of one
  address share a slot in different currencies, the newer one is released (a note says so; a
  transfer for it is then listed for an admin). New `payer_address`, `excess_cents`,
  `resolution`.
- `crypto_transfers`, `crypto_unmatched_transfers`: new `log_position` (the log's position among
  its transaction's logs), unique with (chain_id, tx_hash) instead of the block's `log_index`.
  Rows recorded before this revision keep their block log index as position: they are final
  (older than the reorg window) once the watcher has run for a few minutes after the upgrade.
- `crypto_unmatched_transfers`: new `kind`, `named_payment_id`, `resolution`.
- New `crypto_resolutions`.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RESOLUTION = "resolution IN ('credited', 'refunded')"


def upgrade() -> None:
    # Open quotes of one address sharing a slot across currencies: keep the oldest open.
    op.execute(
        sa.text(
            """
            UPDATE crypto_payments SET open_slot = NULL,
                admin_note = admin_note || CASE WHEN admin_note = '' THEN '' ELSE :sep END
                    || :note
            WHERE open_slot IS NOT NULL AND EXISTS (
                SELECT 1 FROM crypto_payments AS older
                WHERE older.network = crypto_payments.network
                  AND older.pay_to_address = crypto_payments.pay_to_address
                  AND older.open_slot = crypto_payments.open_slot
                  AND older.currency <> crypto_payments.currency
                  AND (older.created_at < crypto_payments.created_at
                       OR (older.created_at = crypto_payments.created_at
                           AND older.id < crypto_payments.id))
            )
            """
        ).bindparams(
            sep="\n",
            note="migration 0007: amount digits shared with an older quote in another currency; "
            "no longer matched automatically",
        )
    )
    with op.batch_alter_table("crypto_payments") as batch:
        batch.drop_constraint(
            op.f("uq_crypto_payments_network_currency_pay_to_address_open_slot"), type_="unique"
        )
        batch.create_unique_constraint(
            op.f("uq_crypto_payments_network_pay_to_address_open_slot"),
            ["network", "pay_to_address", "open_slot"],
        )
        batch.add_column(sa.Column("payer_address", sa.String(), nullable=True))
        batch.add_column(
            sa.Column("excess_cents", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch.add_column(sa.Column("resolution", sa.String(), nullable=True))
        batch.create_check_constraint(
            op.f("ck_crypto_payments_resolution"),
            "resolution IN ('credited', 'refunded', 'admin_credit')",
        )

    for table in ("crypto_transfers", "crypto_unmatched_transfers"):
        op.add_column(table, sa.Column("log_position", sa.Integer(), nullable=True))
        op.execute(f"UPDATE {table} SET log_position = log_index")
        with op.batch_alter_table(table) as batch:
            batch.alter_column("log_position", existing_type=sa.Integer(), nullable=False)
            batch.drop_constraint(op.f(f"uq_{table}_chain_id_tx_hash_log_index"), type_="unique")
            batch.create_unique_constraint(
                op.f(f"uq_{table}_chain_id_tx_hash_log_position"),
                ["chain_id", "tx_hash", "log_position"],
            )

    with op.batch_alter_table("crypto_unmatched_transfers") as batch:
        batch.add_column(sa.Column("kind", sa.String(), server_default="unmatched", nullable=False))
        batch.add_column(sa.Column("named_payment_id", sa.String(), nullable=True))
        batch.add_column(sa.Column("resolution", sa.String(), nullable=True))
        batch.create_check_constraint(
            op.f("ck_crypto_unmatched_transfers_kind"),
            "kind IN ('unmatched', 'wrong_currency', 'wrong_payer', 'unsupported')",
        )
        batch.create_check_constraint(op.f("ck_crypto_unmatched_transfers_resolution"), _RESOLUTION)

    op.create_table(
        "crypto_resolutions",
        sa.Column("item_id", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("plan_id", sa.String(), nullable=False),
        sa.Column("interval", sa.String(), nullable=False),
        sa.Column("payment_id", sa.String(), nullable=True),
        sa.Column("refund_tx_hash", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "action IN ('credited', 'refunded')", name=op.f("ck_crypto_resolutions_action")
        ),
        sa.PrimaryKeyConstraint("item_id", name=op.f("pk_crypto_resolutions")),
    )


def downgrade() -> None:
    op.drop_table("crypto_resolutions")
    with op.batch_alter_table("crypto_unmatched_transfers") as batch:
        batch.drop_constraint("ck_crypto_unmatched_transfers_resolution", type_="check")
        batch.drop_constraint("ck_crypto_unmatched_transfers_kind", type_="check")
        batch.drop_column("resolution")
        batch.drop_column("named_payment_id")
        batch.drop_column("kind")
    for table in ("crypto_transfers", "crypto_unmatched_transfers"):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"uq_{table}_chain_id_tx_hash_log_position", type_="unique")
            batch.create_unique_constraint(
                f"uq_{table}_chain_id_tx_hash_log_index", ["chain_id", "tx_hash", "log_index"]
            )
            batch.drop_column("log_position")
    with op.batch_alter_table("crypto_payments") as batch:
        batch.drop_constraint("ck_crypto_payments_resolution", type_="check")
        batch.drop_column("resolution")
        batch.drop_column("excess_cents")
        batch.drop_column("payer_address")
        batch.drop_constraint("uq_crypto_payments_network_pay_to_address_open_slot", type_="unique")
        batch.create_unique_constraint(
            "uq_crypto_payments_network_currency_pay_to_address_open_slot",
            ["network", "currency", "pay_to_address", "open_slot"],
        )
