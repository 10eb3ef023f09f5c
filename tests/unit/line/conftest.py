"""Hand-built store records for the quality tests: a line whose figures are known in advance.

The builders are handed out as session fixtures (so hypothesis tests can use them too).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from cellsight.storage.records import CellRecord, Disposition, InspectionRecord, Reason
from cellsight.types import Verdict

STATIONS = ("cosmetic", "el", "ir")
T0 = datetime(2025, 3, 1, 8, 0, 0)
Line = tuple[list[InspectionRecord], list[CellRecord]]


def inspection(
    cell_id: str,
    station: str,
    verdict: Verdict,
    *,
    run_id: int = 1,
    sequence: int = 0,
    minutes: float = 0.0,
    defect: str | None = None,
    reason: Reason | None = None,
    latency_ms: float = 10.0,
) -> InspectionRecord:
    return InspectionRecord(
        run_id=run_id,
        sequence=sequence,
        cell_id=cell_id,
        station=station,
        station_index=STATIONS.index(station) if station in STATIONS else 9,
        verdict=verdict,
        score=float("nan") if verdict is Verdict.ERROR else (0.2 if verdict is Verdict.OK else 0.8),
        defect_class=defect,
        reason=reason,
        model_version="1",
        model_hash="abc",
        latency_ms=latency_ms,
        image_path=None,
        heatmap_path=None,
        inspected_at=T0 + timedelta(minutes=minutes),
    )


def cell(
    cell_id: str,
    disposition: Disposition,
    *,
    run_id: int = 1,
    sequence: int = 0,
    minutes: float = 0.0,
    failed_station: str | None = None,
    reason: Reason | None = None,
) -> CellRecord:
    return CellRecord(
        run_id=run_id,
        sequence=sequence,
        cell_id=cell_id,
        disposition=disposition,
        failed_station=failed_station,
        reason=reason,
        finished_at=T0 + timedelta(minutes=minutes),
    )


def reject_at_once_line() -> Line:
    """100 cells, reject at once.

    cosmetic: 10 NG (scratch), 2 ERROR (bad_image)        -> 88/100 pass
    el:       8 NG (crack 6, finger 2)                    -> 80/88 pass
    ir:       4 NG (hotspot), 1 ERROR (inspection_failed) -> 75/80 pass
    final: 75 OK, 22 NG, 3 REVIEW (the ERRORs).
    """
    inspections: list[InspectionRecord] = []
    cells: list[CellRecord] = []
    for seq in range(100):
        cid = f"C{seq:03d}"
        t = float(seq)
        plan: list[tuple[str, Verdict, str | None, Reason | None]] = []
        if seq < 10:
            plan = [("cosmetic", Verdict.NG, "scratch", None)]
        elif seq < 12:
            plan = [("cosmetic", Verdict.ERROR, None, Reason.BAD_IMAGE)]
        elif seq < 18:
            plan = [("cosmetic", Verdict.OK, None, None), ("el", Verdict.NG, "crack", None)]
        elif seq < 20:
            plan = [("cosmetic", Verdict.OK, None, None), ("el", Verdict.NG, "finger", None)]
        elif seq < 24:
            plan = [(s, Verdict.OK, None, None) for s in STATIONS[:2]] + [("ir", Verdict.NG, "hotspot", None)]
        elif seq < 25:
            plan = [(s, Verdict.OK, None, None) for s in STATIONS[:2]]
            plan.append(("ir", Verdict.ERROR, None, Reason.INSPECTION_FAILED))
        else:
            plan = [(s, Verdict.OK, None, None) for s in STATIONS]
        for k, (station, verdict, defect, reason) in enumerate(plan):
            inspections.append(
                inspection(
                    cid,
                    station,
                    verdict,
                    sequence=seq,
                    minutes=t + k / 10,
                    defect=defect,
                    reason=reason,
                    latency_ms=10.0 * (k + 1),
                )
            )
        last_station, last_verdict, _, last_reason = plan[-1]
        disposition = {Verdict.OK: Disposition.OK, Verdict.NG: Disposition.NG, Verdict.ERROR: Disposition.REVIEW}
        cells.append(
            cell(
                cid,
                disposition[last_verdict],
                sequence=seq,
                minutes=t + 0.5,
                failed_station=None if last_verdict is Verdict.OK else last_station,
                reason=last_reason,
            )
        )
    return inspections, cells


@pytest.fixture(scope="session")
def make_inspection() -> Callable[..., InspectionRecord]:
    return inspection


@pytest.fixture(scope="session")
def make_cell() -> Callable[..., CellRecord]:
    return cell


@pytest.fixture()
def line_records() -> Line:
    return reject_at_once_line()
