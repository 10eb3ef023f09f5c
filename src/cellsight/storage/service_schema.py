"""The service's tables: API tokens, model deployments per station, reviews and shadow scores.

Kept apart from the traceability tables (schema.py) that the line runtime writes: the line never needs
these, and the service only adds rows that point at inspections, never changes them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cellsight.storage.schema import Base


class ApiTokenRow(Base):
    """A bearer token, stored only as its SHA-256 (see `cellsight.service.auth` for why that suffices)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))  # viewer, operator, admin
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class DeploymentRow(Base):
    """One model put live (kind "live") or set as shadow (kind "shadow") at a station; history is kept.

    The current live model is the newest live row not rolled back; a rollback stamps `ended_at` on it,
    so the one before becomes current again. Shadows end the same way when replaced or cleared.
    """

    __tablename__ = "model_deployments"
    __table_args__ = (Index("ix_model_deployments_station_kind", "station", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    station: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))  # live, shadow
    version: Mapped[str] = mapped_column(String(128))
    model_sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ReviewRow(Base):
    """A person's decision on an NG or ERROR inspection; a later row for the same inspection overrides."""

    __tablename__ = "reviews"
    __table_args__ = (Index("ix_reviews_inspection", "inspection_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id"))
    decision: Mapped[str] = mapped_column(String(32))  # confirmed_defect, false_call
    defect_class: Mapped[str | None] = mapped_column(String(64), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    reviewer: Mapped[str] = mapped_column(String(128))
    reviewed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ShadowScoreRow(Base):
    """The shadow model's opinion of an inspection: stored for comparison, never returned as the verdict."""

    __tablename__ = "shadow_scores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id"), unique=True)
    model_version: Mapped[str] = mapped_column(String(128))
    model_sha256: Mapped[str] = mapped_column(String(64))
    verdict: Mapped[str] = mapped_column(String(8))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    defect_class: Mapped[str | None] = mapped_column(String(64), nullable=True)


class RunCounterRow(Base):
    """A service run's next sequence number, handed out by an atomic UPDATE: safe for many processes."""

    __tablename__ = "run_counters"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    next_sequence: Mapped[int] = mapped_column(Integer)


class CellSequenceRow(Base):
    """Which sequence a cell ID holds in a run; the unique keys make two workers agree on one."""

    __tablename__ = "cell_sequences"
    __table_args__ = (
        UniqueConstraint("run_id", "cell_id", name="uq_cell_sequence_run_cell"),
        UniqueConstraint("run_id", "sequence", name="uq_cell_sequence_run_sequence"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    cell_id: Mapped[str] = mapped_column(String(128))
    sequence: Mapped[int] = mapped_column(Integer)
