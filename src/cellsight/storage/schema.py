"""The traceability tables (SQLAlchemy 2 declarative). Alembic migrations own their creation.

One row per inspection and one per finished cell. Unique keys make a replayed write after a crash
impossible to double-count: (run, sequence, station) for inspections, (run, sequence) for cells.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class RunRow(Base):
    """One start of the line with one configuration; a resumed run keeps its row."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    line: Mapped[str] = mapped_column(String(128), index=True)
    config_sha256: Mapped[str] = mapped_column(String(64))
    stations: Mapped[str] = mapped_column(Text)  # JSON list, in line order
    status: Mapped[str] = mapped_column(String(16))  # running, finished, stopped
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class InspectionRow(Base):
    __tablename__ = "inspections"
    __table_args__ = (
        UniqueConstraint("run_id", "sequence", "station", name="uq_inspection_run_sequence_station"),
        Index("ix_inspections_cell_id", "cell_id"),
        Index("ix_inspections_station_time", "station", "inspected_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    sequence: Mapped[int] = mapped_column(Integer)
    cell_id: Mapped[str] = mapped_column(String(128))
    station: Mapped[str] = mapped_column(String(64))
    station_index: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[str] = mapped_column(String(8))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)  # NULL: no score could be made
    defect_class: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    model_version: Mapped[str] = mapped_column(String(128))
    model_sha256: Mapped[str] = mapped_column(String(64))
    latency_ms: Mapped[float] = mapped_column(Float)
    image_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    heatmap_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    inspected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CellRow(Base):
    __tablename__ = "cells"
    __table_args__ = (
        UniqueConstraint("run_id", "sequence", name="uq_cell_run_sequence"),
        Index("ix_cells_cell_id", "cell_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    sequence: Mapped[int] = mapped_column(Integer)
    cell_id: Mapped[str] = mapped_column(String(128))
    disposition: Mapped[str] = mapped_column(String(8))
    failed_station: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    audit: Mapped[bool] = mapped_column(Boolean, default=False)  # sampled for an audit (truth for OK cells)


class TruthRow(Base):
    """What an inspected image really showed, and who says so. One row per (inspection, source)."""

    __tablename__ = "inspection_truth"
    __table_args__ = (UniqueConstraint("inspection_id", "source", name="uq_truth_inspection_source"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id"))
    true_class: Mapped[str] = mapped_column(String(64))  # "good" or the defect class
    source: Mapped[str] = mapped_column(String(16))  # synthetic, review, audit, teardown
    recorded_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
