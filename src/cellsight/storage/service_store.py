"""The service's reads and writes beside the traceability store: tokens, deployments, reviews, shadows.

Plain records in, plain records out (as in store.py), so the HTTP layer and the dashboard never touch
ORM rows. Every write commits its own transaction before returning.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import CursorResult, Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cellsight.storage.records import InspectionRecord
from cellsight.storage.schema import InspectionRow
from cellsight.storage.service_schema import (
    ApiTokenRow,
    CellSequenceRow,
    DeploymentRow,
    ReviewRow,
    RunCounterRow,
    ShadowScoreRow,
)
from cellsight.storage.store import TraceStore, _inspection_record, _utc


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    role: str


@dataclass(frozen=True)
class Deployment:
    id: int
    station: str
    kind: str  # live, shadow
    version: str
    model_sha256: str
    path: str
    created_by: str
    created_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True)
class Review:
    id: int
    inspection_id: int
    decision: str
    defect_class: str | None
    note: str | None
    reviewer: str
    reviewed_at: datetime


@dataclass(frozen=True)
class Disagreement:
    """An inspection where the live and the shadow model gave different verdicts."""

    inspection_id: int
    cell_id: str
    station: str
    live_verdict: str
    live_score: float | None
    shadow_version: str
    shadow_verdict: str
    shadow_score: float | None


class ServiceStore:
    """The service's tables on the same database (and engine) as a TraceStore."""

    def __init__(self, store: TraceStore) -> None:
        self.trace = store
        self._sessions = store._sessions

    # --- tokens -----------------------------------------------------------------------------------

    def add_token(self, name: str, role: str, token_sha256: str) -> int:
        with self._sessions.begin() as session:
            row = ApiTokenRow(name=name, role=role, token_sha256=token_sha256, created_at=_now())
            session.add(row)
            session.flush()
            return row.id

    def token(self, token_sha256: str) -> TokenInfo | None:
        with self._sessions() as session:
            row = session.scalar(
                select(ApiTokenRow).where(ApiTokenRow.token_sha256 == token_sha256, ApiTokenRow.revoked_at.is_(None))
            )
            return None if row is None else TokenInfo(row.id, row.name, row.role)

    def revoke_tokens(self, name: str) -> int:
        """Revoke every live token of `name` at once (they stop working on the next request); how many."""
        with self._sessions.begin() as session:
            rows = session.scalars(select(ApiTokenRow).where(ApiTokenRow.name == name,
                                                             ApiTokenRow.revoked_at.is_(None))).all()
            for row in rows:
                row.revoked_at = _now()
            return len(rows)

    def token_count(self) -> int:
        with self._sessions() as session:
            return session.scalar(select(func.count()).select_from(ApiTokenRow)) or 0

    # --- model deployments ------------------------------------------------------------------------

    def add_deployment(self, station: str, kind: str, version: str, sha256: str, path: str, by: str) -> Deployment:
        """A new live model (the previous one stays, for rollback) or a new shadow (replacing the old one)."""
        with self._sessions.begin() as session:
            if kind == "shadow":
                _end(session, station, "shadow")
            row = DeploymentRow(station=station, kind=kind, version=version, model_sha256=sha256, path=path,
                                created_by=by, created_at=_now())
            session.add(row)
            session.flush()
            return _deployment(row)

    def current(self, station: str, kind: str = "live") -> Deployment | None:
        with self._sessions() as session:
            row = session.scalar(_active(station, kind).limit(1))
            return None if row is None else _deployment(row)

    def rollback(self, station: str) -> Deployment:
        """End the current live model; the one deployed before it is live again. LookupError without one."""
        with self._sessions.begin() as session:
            rows = session.scalars(_active(station, "live").limit(2)).all()
            if len(rows) < 2:
                raise LookupError(f"station {station}: no earlier model to roll back to")
            rows[0].ended_at = _now()
            return _deployment(rows[1])

    def clear_shadow(self, station: str) -> bool:
        with self._sessions.begin() as session:
            return _end(session, station, "shadow") > 0

    def deployments(self, station: str | None = None) -> list[Deployment]:
        with self._sessions() as session:
            query = select(DeploymentRow).order_by(DeploymentRow.id)
            if station is not None:
                query = query.where(DeploymentRow.station == station)
            return [_deployment(row) for row in session.scalars(query)]

    # --- shadow scores ----------------------------------------------------------------------------

    def add_shadow_score(self, inspection_id: int, version: str, sha256: str, verdict: str, score: float | None,
                         defect_class: str | None) -> None:
        with self._sessions.begin() as session:
            session.add(ShadowScoreRow(inspection_id=inspection_id, model_version=version, model_sha256=sha256,
                                       verdict=verdict, score=score, defect_class=defect_class))

    def disagreements(self, station: str | None = None, limit: int = 100) -> list[Disagreement]:
        with self._sessions() as session:
            query = (
                select(InspectionRow, ShadowScoreRow)
                .join(ShadowScoreRow, ShadowScoreRow.inspection_id == InspectionRow.id)
                .where(ShadowScoreRow.verdict != InspectionRow.verdict)
                .order_by(InspectionRow.id.desc())
                .limit(limit)
            )
            if station is not None:
                query = query.where(InspectionRow.station == station)
            return [
                Disagreement(i.id, i.cell_id, i.station, i.verdict, i.score, s.model_version, s.verdict, s.score)
                for i, s in session.execute(query)
            ]

    def shadow_counts(self, station: str) -> tuple[int, int]:
        """(inspections scored by a shadow, of which the verdicts differ) at a station."""
        with self._sessions() as session:
            base = (
                select(func.count())
                .select_from(ShadowScoreRow)
                .join(InspectionRow, ShadowScoreRow.inspection_id == InspectionRow.id)
                .where(InspectionRow.station == station)
            )
            total = session.scalar(base) or 0
            differ = session.scalar(base.where(ShadowScoreRow.verdict != InspectionRow.verdict)) or 0
            return total, differ

    # --- inspections by id ------------------------------------------------------------------------

    def inspection(self, inspection_id: int) -> InspectionRecord | None:
        with self._sessions() as session:
            row = session.get(InspectionRow, inspection_id)
            return None if row is None else _inspection_record(row)

    def recent(self, station: str | None = None, verdicts: tuple[str, ...] = ("NG", "ERROR"),
               limit: int = 50) -> list[tuple[int, InspectionRecord]]:
        """The newest inspections with one of `verdicts`, newest first (the NG gallery)."""
        with self._sessions() as session:
            query = select(InspectionRow).where(InspectionRow.verdict.in_(verdicts))
            if station is not None:
                query = query.where(InspectionRow.station == station)
            rows = session.scalars(query.order_by(InspectionRow.id.desc()).limit(limit))
            return [(row.id, _inspection_record(row)) for row in rows]

    def cell_inspections(self, cell_id: str) -> list[tuple[int, InspectionRecord]]:
        """Every inspection of a cell ID, any run and station, in the order they were committed."""
        with self._sessions() as session:
            rows = session.scalars(select(InspectionRow).where(InspectionRow.cell_id == cell_id)
                                   .order_by(InspectionRow.id))
            return [(row.id, _inspection_record(row)) for row in rows]

    def cell_sequence(self, run_id: int, cell_id: str) -> tuple[int, set[str]] | None:
        """Where a cell ID already is in a run: its sequence and the stations that inspected it."""
        with self._sessions() as session:
            rows = session.execute(
                select(InspectionRow.sequence, InspectionRow.station)
                .where(InspectionRow.run_id == run_id, InspectionRow.cell_id == cell_id)
                .order_by(InspectionRow.id)
            ).all()
            if not rows:
                return None
            return rows[0][0], {station for _, station in rows}

    def inspected_at_station(self, cell_id: str, station: str) -> bool:
        with self._sessions() as session:
            found = session.scalar(
                select(InspectionRow.id).where(InspectionRow.cell_id == cell_id, InspectionRow.station == station)
                .limit(1)
            )
            return found is not None

    def take_sequence(self, run_id: int) -> int:
        """A sequence number no other caller (thread, process or host) of this run gets: an atomic UPDATE of
        the run's counter, started after the highest sequence the run already holds."""
        for _ in range(3):
            with self._sessions.begin() as session:
                taken = session.execute(
                    update(RunCounterRow).where(RunCounterRow.run_id == run_id)
                    .values(next_sequence=RunCounterRow.next_sequence + 1).returning(RunCounterRow.next_sequence)
                ).scalar()
                if taken is not None:
                    return int(taken) - 1
            try:
                with self._sessions.begin() as session:
                    held = session.scalar(select(func.max(CellSequenceRow.sequence))
                                          .where(CellSequenceRow.run_id == run_id))
                    start = max(self.next_sequence(run_id), -1 if held is None else held + 1)
                    session.add(RunCounterRow(run_id=run_id, next_sequence=start))
            except IntegrityError:
                continue  # another process made the counter first: take from it
        raise RuntimeError(f"run {run_id}: could not take a sequence number")

    def claim_cell(self, run_id: int, cell_id: str) -> int:
        """The cell's sequence in this run: the one already claimed, or a new one claimed now (unique key:
        when two processes race for a new cell, both get the winner's sequence)."""
        found = self._claimed(run_id, cell_id)
        if found is not None:
            return found
        sequence = self.take_sequence(run_id)
        try:
            with self._sessions.begin() as session:
                session.add(CellSequenceRow(run_id=run_id, cell_id=cell_id, sequence=sequence))
            return sequence
        except IntegrityError:
            found = self._claimed(run_id, cell_id)
            if found is None:
                raise
            return found

    def _claimed(self, run_id: int, cell_id: str) -> int | None:
        with self._sessions() as session:
            return session.scalar(select(CellSequenceRow.sequence)
                                  .where(CellSequenceRow.run_id == run_id, CellSequenceRow.cell_id == cell_id))

    def next_sequence(self, run_id: int) -> int:
        with self._sessions() as session:
            last = session.scalar(select(func.max(InspectionRow.sequence)).where(InspectionRow.run_id == run_id))
            return 0 if last is None else last + 1

    def inspection_ids(self, run_id: int, cell_id: str | None = None) -> list[int]:
        with self._sessions() as session:
            query = select(InspectionRow.id).where(InspectionRow.run_id == run_id)
            if cell_id is not None:
                query = query.where(InspectionRow.cell_id == cell_id)
            return list(session.scalars(query.order_by(InspectionRow.id)))

    # --- reviews ----------------------------------------------------------------------------------

    def add_review(self, inspection_id: int, decision: str, defect_class: str | None, note: str | None,
                   reviewer: str) -> Review:
        with self._sessions.begin() as session:
            row = ReviewRow(inspection_id=inspection_id, decision=decision, defect_class=defect_class, note=note,
                            reviewer=reviewer, reviewed_at=_now())
            session.add(row)
            session.flush()
            return _review(row)

    def review_queue(self, station: str | None = None, limit: int = 200) -> list[tuple[int, InspectionRecord]]:
        """NG and ERROR inspections nobody has reviewed yet, oldest first (first in, first looked at)."""
        with self._sessions() as session:
            reviewed = select(ReviewRow.id).where(ReviewRow.inspection_id == InspectionRow.id).exists()
            query = select(InspectionRow).where(InspectionRow.verdict.in_(("NG", "ERROR")), ~reviewed)
            if station is not None:
                query = query.where(InspectionRow.station == station)
            rows = session.scalars(query.order_by(InspectionRow.id).limit(limit))
            return [(row.id, _inspection_record(row)) for row in rows]

    def reviews(self, inspection_id: int) -> list[Review]:
        with self._sessions() as session:
            rows = session.scalars(select(ReviewRow).where(ReviewRow.inspection_id == inspection_id)
                                   .order_by(ReviewRow.id))
            return [_review(row) for row in rows]

    def latest_reviews(self, station: str | None = None) -> list[tuple[Review, int, InspectionRecord]]:
        """Each reviewed inspection once, with its newest review (the one that counts)."""
        with self._sessions() as session:
            newest = select(func.max(ReviewRow.id)).group_by(ReviewRow.inspection_id)
            query = (
                select(ReviewRow, InspectionRow)
                .join(InspectionRow, ReviewRow.inspection_id == InspectionRow.id)
                .where(ReviewRow.id.in_(newest))
                .order_by(ReviewRow.inspection_id)
            )
            if station is not None:
                query = query.where(InspectionRow.station == station)
            return [(_review(r), i.id, _inspection_record(i)) for r, i in session.execute(query)]


def _now() -> datetime:
    return datetime.now(UTC)


def _active(station: str, kind: str) -> Select[DeploymentRow]:
    return (
        select(DeploymentRow)
        .where(DeploymentRow.station == station, DeploymentRow.kind == kind, DeploymentRow.ended_at.is_(None))
        .order_by(DeploymentRow.id.desc())
    )


def _end(session: Session, station: str, kind: str) -> int:
    result: CursorResult[tuple[()]] = session.execute(  # type: ignore[assignment]
        update(DeploymentRow)
        .where(DeploymentRow.station == station, DeploymentRow.kind == kind, DeploymentRow.ended_at.is_(None))
        .values(ended_at=_now())
    )
    return int(result.rowcount or 0)


def _deployment(row: DeploymentRow) -> Deployment:
    return Deployment(row.id, row.station, row.kind, row.version, row.model_sha256, row.path, row.created_by,
                      _utc(row.created_at), None if row.ended_at is None else _utc(row.ended_at))


def _review(row: ReviewRow) -> Review:
    return Review(row.id, row.inspection_id, row.decision, row.defect_class, row.note, row.reviewer,
                  _utc(row.reviewed_at))
