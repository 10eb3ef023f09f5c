"""The traceability store against SQLite and a real PostgreSQL server: same tests, same answers."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from sqlalchemy import inspect

from cellsight.storage.migrate import current_revision, downgrade, head_revision, upgrade
from cellsight.storage.records import CellRecord, Disposition, InspectionRecord, Reason
from cellsight.storage.store import DuplicateRecordError, TraceStore
from cellsight.types import Verdict


def _inspection(run_id: int, sequence: int, station: str, index: int, verdict: Verdict = Verdict.OK,
                cell_id: str | None = None, score: float = 0.2, reason: Reason | None = None) -> InspectionRecord:
    return InspectionRecord(
        run_id=run_id, sequence=sequence, cell_id=cell_id or f"C{sequence:05d}", station=station,
        station_index=index, verdict=verdict, score=score, defect_class=None if verdict is Verdict.OK else "dent",
        reason=reason, model_version="can-v1", model_hash="ab" * 32, latency_ms=12.5,
        image_path=f"/img/{sequence}.png", heatmap_path=None, inspected_at=datetime.now(UTC),
        error="bad.png: truncated" if verdict is Verdict.ERROR else None,
    )


def _cell(run_id: int, sequence: int, disposition: Disposition = Disposition.OK) -> CellRecord:
    return CellRecord(run_id, sequence, f"C{sequence:05d}", disposition, None, None, datetime.now(UTC))


def test_open_migrates_to_head_and_reopening_keeps_data(database_url: str) -> None:
    with TraceStore.open(database_url) as store:
        assert current_revision(store.engine) == head_revision()
        run_id = store.start_run("line-1", "f" * 64, ["electrode", "weld"])
        store.record_inspection(_inspection(run_id, 0, "electrode", 0))
    with TraceStore.open(database_url) as store:
        assert [r.id for r in store.runs()] == [run_id]
        assert store.run(run_id).stations == ("electrode", "weld")
        assert len(store.inspections(run_id)) == 1


def test_records_round_trip_exactly(database_url: str) -> None:
    with TraceStore.open(database_url) as store:
        run_id = store.start_run("line-1", "f" * 64, ["can"])
        written = _inspection(run_id, 3, "can", 0, Verdict.ERROR, score=float("nan"), reason=Reason.BAD_IMAGE)
        store.record_inspection(written)
        (read,) = store.inspections(run_id)
        assert math.isnan(read.score) and read.verdict is Verdict.ERROR and read.reason is Reason.BAD_IMAGE
        assert read.error == "bad.png: truncated"
        assert read.inspected_at == written.inspected_at and read.inspected_at.tzinfo is not None
        assert (read.cell_id, read.station, read.model_hash) == (written.cell_id, "can", "ab" * 32)
        cell = CellRecord(run_id, 3, "C00003", Disposition.REVIEW, "can", Reason.BAD_IMAGE, datetime.now(UTC))
        store.record_cell(cell)
        assert store.cells(run_id) == [cell]
        assert store.cells(cell_id="C00003") == [cell]


def test_a_second_write_of_the_same_inspection_is_refused(database_url: str) -> None:
    with TraceStore.open(database_url) as store:
        run_id = store.start_run("line-1", "f" * 64, ["can"])
        store.record_inspection(_inspection(run_id, 0, "can", 0))
        with pytest.raises(DuplicateRecordError, match="sequence 0 at can"):
            store.record_inspection(_inspection(run_id, 0, "can", 0, Verdict.NG))
        store.record_cell(_cell(run_id, 0))
        with pytest.raises(DuplicateRecordError):
            store.record_cell(_cell(run_id, 0, Disposition.NG))
        assert [r.verdict for r in store.inspections(run_id)] == [Verdict.OK]


def test_resume_point_is_the_first_unfinished_cell_with_its_done_stations(database_url: str) -> None:
    with TraceStore.open(database_url) as store:
        run_id = store.start_run("line-1", "f" * 64, ["electrode", "weld", "can"])
        assert store.resume_point(run_id).sequence == 0
        for sequence in range(2):
            for index, station in enumerate(["electrode", "weld", "can"]):
                store.record_inspection(_inspection(run_id, sequence, station, index))
            store.record_cell(_cell(run_id, sequence))
        store.record_inspection(_inspection(run_id, 2, "electrode", 0))
        point = store.resume_point(run_id)
        assert (point.sequence, point.cell_id, point.done_stations) == (2, "C00002", ("electrode",))
        assert store.counts(run_id) == (7, 2)


def test_duplicate_cell_ids_are_found_across_cells_and_runs(database_url: str) -> None:
    with TraceStore.open(database_url) as store:
        first = store.start_run("line-1", "f" * 64, ["can"])
        store.record_inspection(_inspection(first, 0, "can", 0, cell_id="LC1"))
        assert not store.cell_id_seen("LC1", first, 0)  # the same cell at another station is no duplicate
        assert store.cell_id_seen("LC1", first, 1)
        second = store.start_run("line-1", "f" * 64, ["can"])
        assert store.cell_id_seen("LC1", second, 0)
        assert not store.cell_id_seen("LC2", second, 0)


def test_run_status_and_genealogy_queries(database_url: str) -> None:
    with TraceStore.open(database_url) as store:
        run_id = store.start_run("line-1", "f" * 64, ["electrode", "weld"])
        store.record_inspection(_inspection(run_id, 0, "electrode", 0))
        store.record_inspection(_inspection(run_id, 0, "weld", 1, Verdict.NG))
        store.set_run_status(run_id, "finished")
        run = store.run(run_id)
        assert run.status == "finished" and run.finished_at is not None
        assert [r.station for r in store.inspections(cell_id="C00000")] == ["electrode", "weld"]
        assert [r.verdict for r in store.inspections(station="weld")] == [Verdict.NG]
        with pytest.raises(KeyError, match="run 99"):
            store.run(99)


def test_migrations_downgrade_and_upgrade_cleanly(database_url: str) -> None:
    with TraceStore.open(database_url) as store:
        downgrade(store.engine, "base")
        assert "inspections" not in inspect(store.engine).get_table_names()
        upgrade(store.engine)
        assert {"runs", "inspections", "cells"} <= set(inspect(store.engine).get_table_names())


def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with TraceStore.open(f"sqlite:///{tmp_path / 'a' / 'trace.db'}") as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_unsupported_database_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unsupported database 'mysql'"):
        TraceStore.open("mysql://root@localhost/test")
