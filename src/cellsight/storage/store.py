"""The traceability store: every inspection and every cell's fate, committed before anyone is told.

Writers (the line runtime, the service) call `record_inspection` and `record_cell`; each commits its
own transaction and returns only once the row is durable, so a verdict reported to a PLC or a screen is
always already in the database. Readers get plain records (records.py), never ORM rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cellsight.errors import ConfigError
from cellsight.storage.engine import DEFAULT_URL, make_engine, normalise_url
from cellsight.storage.migrate import upgrade
from cellsight.storage.records import CellRecord, Disposition, InspectionRecord, Reason
from cellsight.storage.schema import CellRow, InspectionRow, RunRow
from cellsight.types import Verdict


class DuplicateRecordError(ValueError):
    """A second write of the same (run, sequence, station) or (run, sequence): never silently merged."""


@dataclass(frozen=True)
class RunInfo:
    id: int
    line: str
    config_sha256: str
    stations: tuple[str, ...]
    status: str
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class ResumePoint:
    """Where a run continues after a stop: the first unfinished cell and the stations it already has."""

    sequence: int
    cell_id: str | None
    done_stations: tuple[str, ...]


class TraceStore:
    """A handle on one database, migrated to the newest schema on open."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str = DEFAULT_URL, create: bool = True) -> TraceStore:
        """Open (and migrate) the database at `url`. `create=False` for commands that only read or add to
        an existing store: a mistyped SQLite path is then an error, not a new empty database.

        A database that cannot be reached or used is a ConfigError naming the URL (password hidden)."""
        if not create:
            _require_existing_sqlite(url)
        engine = make_engine(url)
        try:
            upgrade(engine)
        except DBAPIError as exc:
            engine.dispose()
            shown = make_url(normalise_url(url)).render_as_string(hide_password=True)
            first = str(exc.orig or exc).strip().splitlines()[0] if str(exc.orig or exc).strip() else type(exc).__name__
            raise ConfigError(f"{shown}: cannot use the database: {first}") from exc
        return cls(engine)

    def interrupt_running(self, line: str) -> list[int]:
        """Mark runs of `line` still "running" as "interrupted" (their process was killed); their ids."""
        with self._sessions.begin() as session:
            rows = session.scalars(select(RunRow).where(RunRow.line == line, RunRow.status == "running")).all()
            for row in rows:
                row.status = "interrupted"
            return [row.id for row in rows]

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- runs -------------------------------------------------------------------------------------

    def start_run(self, line: str, config_sha256: str, stations: Sequence[str]) -> int:
        with self._sessions.begin() as session:
            row = RunRow(
                line=line, config_sha256=config_sha256, stations=json.dumps(list(stations)),
                status="running", started_at=_now(),
            )
            session.add(row)
            session.flush()
            return row.id

    def set_run_status(self, run_id: int, status: str) -> None:
        finished = _now() if status in ("finished", "stopped") else None
        with self._sessions.begin() as session:
            session.execute(update(RunRow).where(RunRow.id == run_id).values(status=status, finished_at=finished))

    def runs(self, line: str | None = None) -> list[RunInfo]:
        with self._sessions() as session:
            query = select(RunRow).order_by(RunRow.id)
            if line is not None:
                query = query.where(RunRow.line == line)
            return [_run_info(row) for row in session.scalars(query)]

    def run(self, run_id: int) -> RunInfo:
        with self._sessions() as session:
            row = session.get(RunRow, run_id)
            if row is None:
                raise KeyError(f"run {run_id} is not in the store")
            return _run_info(row)

    def latest_run(self, line: str | None = None) -> RunInfo | None:
        runs = self.runs(line)
        return runs[-1] if runs else None

    def resume_point(self, run_id: int) -> ResumePoint:
        """The first cell without a final record; stations it already passed through are kept, not redone."""
        with self._sessions() as session:
            finished = session.scalar(select(func.max(CellRow.sequence)).where(CellRow.run_id == run_id))
            sequence = 0 if finished is None else finished + 1
            rows = session.scalars(
                select(InspectionRow)
                .where(InspectionRow.run_id == run_id, InspectionRow.sequence == sequence)
                .order_by(InspectionRow.station_index)
            ).all()
            cell_id = rows[0].cell_id if rows else None
            return ResumePoint(sequence, cell_id, tuple(r.station for r in rows))

    # --- writes -----------------------------------------------------------------------------------

    def record_inspection(self, record: InspectionRecord) -> int:
        """Commit one inspection; returns its row id once durable."""
        row = InspectionRow(
            run_id=record.run_id, sequence=record.sequence, cell_id=record.cell_id, station=record.station,
            station_index=record.station_index, verdict=record.verdict.value,
            score=None if math.isnan(record.score) else float(record.score), defect_class=record.defect_class,
            reason=None if record.reason is None else record.reason.value, error=record.error,
            model_version=record.model_version, model_sha256=record.model_hash, latency_ms=record.latency_ms,
            image_path=record.image_path, heatmap_path=record.heatmap_path, inspected_at=record.inspected_at,
        )
        return self._insert(row, f"inspection of sequence {record.sequence} at {record.station}")

    def record_cell(self, record: CellRecord) -> int:
        row = CellRow(
            run_id=record.run_id, sequence=record.sequence, cell_id=record.cell_id,
            disposition=record.disposition.value, failed_station=record.failed_station,
            reason=None if record.reason is None else record.reason.value, finished_at=record.finished_at,
        )
        return self._insert(row, f"cell record of sequence {record.sequence}")

    def save_cell(self, record: CellRecord) -> int:
        """Write the cell's disposition, replacing the one recorded before (the service decides a cell again
        when a later inspection of it arrives); `record_cell` is the write-once form the line runtime uses."""
        with self._sessions.begin() as session:
            row = session.scalar(select(CellRow).where(CellRow.run_id == record.run_id,
                                                       CellRow.sequence == record.sequence))
            if row is None:
                row = CellRow(run_id=record.run_id, sequence=record.sequence)
                session.add(row)
            row.cell_id = record.cell_id
            row.disposition = record.disposition.value
            row.failed_station = record.failed_station
            row.reason = None if record.reason is None else record.reason.value
            row.finished_at = record.finished_at
            session.flush()
            return row.id

    def cell(self, run_id: int, sequence: int) -> CellRecord | None:
        with self._sessions() as session:
            row = session.scalar(select(CellRow).where(CellRow.run_id == run_id, CellRow.sequence == sequence))
            return None if row is None else _cell_record(row)

    def _insert(self, row: InspectionRow | CellRow, what: str) -> int:
        try:
            with self._sessions.begin() as session:
                session.add(row)
                session.flush()
                return row.id
        except IntegrityError as exc:
            raise DuplicateRecordError(f"run {row.run_id}: {what} is already recorded") from exc

    # --- reads ------------------------------------------------------------------------------------

    def cell_id_seen(self, cell_id: str, run_id: int, sequence: int) -> bool:
        """True when `cell_id` was already recorded for another cell (any run): a duplicate ID."""
        with self._sessions() as session:
            other = (InspectionRow.run_id != run_id) | (InspectionRow.sequence != sequence)
            found = session.scalar(
                select(InspectionRow.id).where(InspectionRow.cell_id == cell_id, other).limit(1)
            )
            return found is not None

    def inspections(
        self,
        run_id: int | None = None,
        cell_id: str | None = None,
        station: str | None = None,
        sequence: int | None = None,
    ) -> list[InspectionRecord]:
        with self._sessions() as session:
            query = select(InspectionRow).order_by(InspectionRow.id)
            if run_id is not None:
                query = query.where(InspectionRow.run_id == run_id)
            if cell_id is not None:
                query = query.where(InspectionRow.cell_id == cell_id)
            if station is not None:
                query = query.where(InspectionRow.station == station)
            if sequence is not None:
                query = query.where(InspectionRow.sequence == sequence)
            return [_inspection_record(row) for row in session.scalars(query)]

    def cells(self, run_id: int | None = None, cell_id: str | None = None) -> list[CellRecord]:
        with self._sessions() as session:
            query = select(CellRow).order_by(CellRow.id)
            if run_id is not None:
                query = query.where(CellRow.run_id == run_id)
            if cell_id is not None:
                query = query.where(CellRow.cell_id == cell_id)
            return [_cell_record(row) for row in session.scalars(query)]

    def counts(self, run_id: int) -> tuple[int, int]:
        """(inspections, cells) recorded for a run: a cheap check for crash tests and progress."""
        with self._sessions() as session:
            inspections = session.scalar(select(func.count()).where(InspectionRow.run_id == run_id)) or 0
            cells = session.scalar(select(func.count()).where(CellRow.run_id == run_id)) or 0
            return inspections, cells

    def session(self) -> Session:
        """A plain session for readers that need their own queries (the service's statistics)."""
        return self._sessions()


def _require_existing_sqlite(url: str) -> None:
    try:
        parsed = make_url(normalise_url(url))
    except ArgumentError:
        return  # make_engine names the problem
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:") and not Path(database).is_file():
        raise ConfigError(f"{url}: no such database file ({parsed.database}); check the path")


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we write is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _run_info(row: RunRow) -> RunInfo:
    return RunInfo(
        id=row.id, line=row.line, config_sha256=row.config_sha256, stations=tuple(json.loads(row.stations)),
        status=row.status, started_at=_utc(row.started_at),
        finished_at=None if row.finished_at is None else _utc(row.finished_at),
    )


def _inspection_record(row: InspectionRow) -> InspectionRecord:
    return InspectionRecord(
        run_id=row.run_id, sequence=row.sequence, cell_id=row.cell_id, station=row.station,
        station_index=row.station_index, verdict=Verdict(row.verdict),
        score=float("nan") if row.score is None else row.score, defect_class=row.defect_class,
        reason=None if row.reason is None else Reason(row.reason), model_version=row.model_version,
        model_hash=row.model_sha256, latency_ms=row.latency_ms, image_path=row.image_path,
        heatmap_path=row.heatmap_path, inspected_at=_utc(row.inspected_at), error=row.error,
    )


def _cell_record(row: CellRow) -> CellRecord:
    return CellRecord(
        run_id=row.run_id, sequence=row.sequence, cell_id=row.cell_id, disposition=Disposition(row.disposition),
        failed_station=row.failed_station, reason=None if row.reason is None else Reason(row.reason),
        finished_at=_utc(row.finished_at),
    )
