"""Escape, overkill and cost against truth on hand-built records whose answers are known in advance."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from cellsight.calibration.cost_model import CostModel
from cellsight.line.config import Shift
from cellsight.line.costs import cell_costs, costs_by_period, shift_of
from cellsight.line.truth import best_truths, sampled_estimate, truth_rates
from cellsight.storage.records import CellRecord, Disposition, InspectionRecord, TruthRecord, TruthSource
from cellsight.types import Verdict

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CALL = {"OK": (Verdict.OK, Disposition.OK), "NG": (Verdict.NG, Disposition.NG),
        "REVIEW": (Verdict.ERROR, Disposition.REVIEW)}
# (true class, call) for ten cells through one station "weld"
CELLS = [("good", "OK")] * 5 + [("good", "NG"), ("good", "REVIEW"), ("crack", "OK"), ("crack", "NG"),
                                  ("burn", "NG")]


def _line(source: TruthSource = TruthSource.SYNTHETIC, minutes: float = 0.0) -> tuple[
        list[InspectionRecord], list[CellRecord], list[TruthRecord]]:
    inspections, cells, truths = [], [], []
    for sequence, (true_class, call) in enumerate(CELLS):
        verdict, disposition = CALL[call]
        at = T0 + timedelta(minutes=minutes * sequence)
        inspections.append(InspectionRecord(
            1, sequence, f"C{sequence}", "weld", 0, verdict, 0.2, None, None, "v", "h", 1.0, None, None, at))
        cells.append(CellRecord(1, sequence, f"C{sequence}", disposition, None if call == "OK" else "weld", None, at))
        truths.append(TruthRecord(1, sequence, "weld", f"C{sequence}", true_class, source, at))
    return inspections, cells, truths


COSTS = CostModel.model_validate({
    "co2e_kg_per_kwh": 0.5, "escape": 100.0, "review": 0.5, "end_of_line": {"value_added": 16, "energy_kwh": 5},
    "stations": {"weld": {"value_added": 10, "energy_kwh": 2}},
})


def test_rates_and_confusion_against_truth() -> None:
    inspections, cells, truths = _line()
    (station,), line = truth_rates(inspections, cells, truths, ["weld"])
    for rates in (station, line):
        assert rates.confusion.good == (5, 1, 1) and rates.confusion.defective == (1, 2, 0)
        assert (rates.escape.count, rates.escape.n) == (1, 3) and (rates.overkill.count, rates.overkill.n) == (1, 7)
        assert (rates.good_to_review.count, rates.good_to_review.n) == (1, 7)
        assert rates.escape.low < 1 / 3 < rates.escape.high  # Wilson interval around the rate
        assert rates.with_truth == 10 and rates.sources == (("synthetic", 10),)


def test_the_most_trusted_source_wins_and_missing_truth_is_not_guessed() -> None:
    inspections, cells, truths = _line()
    review = TruthRecord(1, 7, "weld", "C7", "good", TruthSource.REVIEW, T0)  # a reviewer disagrees with the source
    teardown = TruthRecord(1, 0, "weld", "C0", "crack", TruthSource.TEARDOWN, T0)
    assert best_truths([review, *truths])[(1, 7, "weld")].source is TruthSource.SYNTHETIC
    assert best_truths([review, teardown])[(1, 0, "weld")].true_class == "crack"
    (station,), line = truth_rates(inspections, cells, truths[:4], ["weld"])
    assert station.with_truth == 4 and station.inspected == 10 and line.with_truth == 4 and line.escape.n == 0


def test_costs_of_a_run() -> None:
    inspections, cells, truths = _line()
    figures = cell_costs("run 1", cells, inspections, truths, COSTS)
    assert (figures.caught, figures.escapes, figures.false_calls, figures.reviews) == (2, 1, 1, 1)
    assert figures.scrap_value_avoided == pytest.approx(2 * (16 - 10))
    assert figures.energy_avoided_kwh == pytest.approx(2 * (5 - 2)) and figures.co2e_avoided_kg == pytest.approx(3.0)
    assert (figures.escape_cost, figures.false_call_cost, figures.review_cost) == (100.0, 10.0, 0.5)
    assert figures.net_saving == pytest.approx(12 - 110.5)


def test_shifts_and_days_in_the_line_timezone() -> None:
    shifts = (Shift(name="early", start=time(6)), Shift(name="late", start=time(14)),
              Shift(name="night", start=time(22)))
    # Berlin is UTC+1 in December: 21:30 UTC is 22:30 local, 02:00 UTC is 03:00 local the next day
    assert shift_of(datetime(2026, 12, 1, 21, 30, tzinfo=UTC), shifts, "Europe/Berlin") == (
        datetime(2026, 12, 1).date(), "night")
    assert shift_of(datetime(2026, 12, 2, 2, 0, tzinfo=UTC), shifts, "Europe/Berlin") == (
        datetime(2026, 12, 1).date(), "night")
    assert shift_of(datetime(2026, 12, 2, 5, 0, tzinfo=UTC), shifts, "UTC") == (datetime(2026, 12, 1).date(), "night")
    inspections, cells, truths = _line(minutes=60.0)  # 12:00 .. 21:00 UTC: early, late and night in Berlin
    per_day, per_shift = costs_by_period(cells, inspections, truths, COSTS, shifts, "Europe/Berlin")
    assert [d.period for d in per_day] == ["2026-12-01"] and per_day[0].cells == 10
    assert [(s.period, s.cells) for s in per_shift] == [
        ("2026-12-01 early", 1), ("2026-12-01 late", 8), ("2026-12-01 night", 1)]
    assert sum(s.escape_cost for s in per_shift) == per_day[0].escape_cost == 100.0


def test_a_real_line_estimates_from_its_audit_sample_and_reviews() -> None:
    inspections, cells, _ = _line()
    shipped = [c.sequence for c in cells if c.disposition is Disposition.OK]  # 0-4 good, 7 crack
    audit = {0, 1, 2, 7}
    cells = [CellRecord(c.run_id, c.sequence, c.cell_id, c.disposition, c.failed_station, c.reason, c.finished_at,
                        audit=c.sequence in audit) for c in cells]
    truths = [TruthRecord(1, s, "weld", f"C{s}", CELLS[s][0], TruthSource.AUDIT, T0) for s in audit]
    truths += [TruthRecord(1, s, "weld", f"C{s}", CELLS[s][0], TruthSource.REVIEW, T0) for s in (5, 8, 9)]
    truths.append(TruthRecord(1, 3, "weld", "C3", "good", TruthSource.SYNTHETIC, T0))  # left out of the estimate
    estimate = sampled_estimate(inspections, cells, truths)
    assert (estimate.shipped, estimate.audited, estimate.found_defective) == (len(shipped), 4, 1)
    assert (estimate.rejected, estimate.reviewed, estimate.found_good) == (4, 3, 1)
    escapes, false_calls = 6 * 0.25, 4 * (1 / 3)
    assert estimate.escapes[0] == pytest.approx(escapes)
    assert estimate.escape_rate is not None and estimate.overkill_rate is not None
    assert estimate.escape_rate[0] == pytest.approx(escapes / (escapes + 4 - false_calls))
    assert estimate.overkill_rate[0] == pytest.approx(false_calls / (false_calls + 6 - escapes))
    assert estimate.escape_rate[1] < estimate.escape_rate[0] < estimate.escape_rate[2]
