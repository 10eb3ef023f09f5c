"""Traceability tables: runs, inspections, cells.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("line", sa.String(128), nullable=False),
        sa.Column("config_sha256", sa.String(64), nullable=False),
        sa.Column("stations", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_runs_line", "runs", ["line"])
    op.create_table(
        "inspections",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("cell_id", sa.String(128), nullable=False),
        sa.Column("station", sa.String(64), nullable=False),
        sa.Column("station_index", sa.Integer, nullable=False),
        sa.Column("verdict", sa.String(8), nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("defect_class", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("image_path", sa.Text, nullable=True),
        sa.Column("heatmap_path", sa.Text, nullable=True),
        sa.Column("inspected_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("run_id", "sequence", "station", name="uq_inspection_run_sequence_station"),
    )
    op.create_index("ix_inspections_cell_id", "inspections", ["cell_id"])
    op.create_index("ix_inspections_station_time", "inspections", ["station", "inspected_at"])
    op.create_table(
        "cells",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("cell_id", sa.String(128), nullable=False),
        sa.Column("disposition", sa.String(8), nullable=False),
        sa.Column("failed_station", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("run_id", "sequence", name="uq_cell_run_sequence"),
    )
    op.create_index("ix_cells_cell_id", "cells", ["cell_id"])


def downgrade() -> None:
    op.drop_table("cells")
    op.drop_table("inspections")
    op.drop_table("runs")
