"""Sequence numbers from the database: per-run counters and the cell-ID -> sequence claim, so several
service processes (`cellsight serve --workers N`, or hosts behind a load balancer) need no in-process lock.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_counters",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("next_sequence", sa.Integer, nullable=False),
    )
    op.create_table(
        "cell_sequences",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("cell_id", sa.String(128), nullable=False),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.UniqueConstraint("run_id", "cell_id", name="uq_cell_sequence_run_cell"),
        sa.UniqueConstraint("run_id", "sequence", name="uq_cell_sequence_run_sequence"),
    )


def downgrade() -> None:
    op.drop_table("cell_sequences")
    op.drop_table("run_counters")
