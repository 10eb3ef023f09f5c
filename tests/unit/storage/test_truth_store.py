"""Truth round-trips through the store on SQLite and PostgreSQL: from the source, an audit, a review."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cellsight.storage.migrate import downgrade, upgrade
from cellsight.storage.records import CellRecord, Disposition, InspectionRecord, TruthSource
from cellsight.storage.service_store import ServiceStore
from cellsight.storage.store import DuplicateRecordError, TraceStore
from cellsight.types import Verdict


def _inspection(run_id: int, sequence: int, station: str, verdict: Verdict = Verdict.OK) -> InspectionRecord:
    return InspectionRecord(
        run_id=run_id, sequence=sequence, cell_id=f"C{sequence:05d}", station=station, station_index=0,
        verdict=verdict, score=0.7 if verdict is Verdict.NG else 0.2,
        defect_class="crack" if verdict is Verdict.NG else None, reason=None, model_version="v1",
        model_hash="ab" * 32, latency_ms=5.0, image_path=None, heatmap_path=None, inspected_at=datetime.now(UTC),
    )


def test_truth_from_source_audit_and_review_round_trips(database_url: str) -> None:
    with TraceStore.open(database_url) as store:
        run_id = store.start_run("line-1", "f" * 64, ["weld"])
        store.record_inspection(_inspection(run_id, 0, "weld"), truth="good")
        store.record_inspection(_inspection(run_id, 1, "weld"), truth="spatter")  # an escape
        ng_id = store.record_inspection(_inspection(run_id, 2, "weld", Verdict.NG))  # no source truth
        audited = CellRecord(run_id, 1, "C00001", Disposition.OK, None, None, datetime.now(UTC), audit=True)
        store.record_cell(audited)
        store.record_truth(run_id, 1, "weld", "spatter", TruthSource.AUDIT, recorded_by="QE Li")
        ServiceStore(store).add_review(ng_id, "false_call", None, "glare", "operator A")
    with TraceStore.open(database_url) as store:  # a fresh connection reads what was committed
        truths = store.truths(run_id)
        assert store.cells(run_id) == [audited]
    found = {(t.sequence, t.source): t for t in truths}
    assert set(found) == {(0, TruthSource.SYNTHETIC), (1, TruthSource.SYNTHETIC), (1, TruthSource.AUDIT),
                          (2, TruthSource.REVIEW)}
    assert found[(0, TruthSource.SYNTHETIC)].true_class == "good" and not found[(0, TruthSource.SYNTHETIC)].defective
    audit = found[(1, TruthSource.AUDIT)]
    assert audit.true_class == "spatter" and audit.recorded_by == "QE Li"
    review = found[(2, TruthSource.REVIEW)]
    assert review.true_class == "good" and review.recorded_by == "operator A" and review.station == "weld"
    assert all(t.recorded_at.tzinfo is not None and t.cell_id.startswith("C") for t in truths)


def test_a_second_truth_from_the_same_source_is_refused_and_unknown_inspections_too(database_url: str) -> None:
    with TraceStore.open(database_url) as store:
        run_id = store.start_run("line-1", "f" * 64, ["weld"])
        store.record_inspection(_inspection(run_id, 0, "weld"))
        store.record_truth(run_id, 0, "weld", "good", TruthSource.TEARDOWN)
        with pytest.raises(DuplicateRecordError, match="teardown truth of sequence 0 at weld"):
            store.record_truth(run_id, 0, "weld", "crack", TruthSource.TEARDOWN)
        with pytest.raises(KeyError, match="no inspection of sequence 5"):
            store.record_truth(run_id, 5, "weld", "good", TruthSource.AUDIT)
        with pytest.raises(ValueError, match="1-64 characters"):
            store.record_truth(run_id, 0, "weld", "", TruthSource.AUDIT)
        assert [t.true_class for t in store.truths(run_id)] == ["good"]


def test_the_truth_migration_downgrades_and_keeps_older_rows(database_url: str) -> None:
    with TraceStore.open(database_url) as store:
        run_id = store.start_run("line-1", "f" * 64, ["weld"])
        store.record_inspection(_inspection(run_id, 0, "weld"), truth="good")
        downgrade(store.engine, "0003")
        upgrade(store.engine)
        assert len(store.inspections(run_id)) == 1 and store.truths(run_id) == []
