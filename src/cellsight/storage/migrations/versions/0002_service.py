"""Service tables: API tokens, model deployments, reviews, shadow scores.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "model_deployments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("station", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_model_deployments_station_kind", "model_deployments", ["station", "kind"])
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("inspection_id", sa.Integer, sa.ForeignKey("inspections.id"), nullable=False),
        sa.Column("decision", sa.String(32), nullable=False),
        sa.Column("defect_class", sa.String(64), nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_reviews_inspection", "reviews", ["inspection_id"])
    op.create_table(
        "shadow_scores",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("inspection_id", sa.Integer, sa.ForeignKey("inspections.id"), nullable=False, unique=True),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("verdict", sa.String(8), nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("defect_class", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("shadow_scores")
    op.drop_table("reviews")
    op.drop_index("ix_model_deployments_station_kind", "model_deployments")
    op.drop_table("model_deployments")
    op.drop_table("api_tokens")
