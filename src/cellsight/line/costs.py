"""Cost of quality, energy and CO2e per run, shift and day, from each cell's call and its truth.

For every cell with a known truth (line/truth.py): a defective cell rejected at station s avoided the
scrap value, energy and CO2e it would have taken to find it at the end-of-line test
(end_of_line minus station s, per the cost model); a defective cell passed is an escape (`escape` cost);
a good cell rejected NG at s is a false call (s's `false_call` cost); every cell sent to REVIEW costs a
look (`review`). Cells without truth are counted but add nothing: their share is shown, never guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from cellsight.calibration.cost_model import CostModel
from cellsight.line.config import Shift
from cellsight.line.truth import best_truths, cell_truth
from cellsight.storage.records import CellRecord, Disposition, InspectionRecord, TruthRecord


@dataclass(frozen=True)
class CostFigures:
    """One period's cost of quality and what early rejection saved, in the cost model's currency."""

    period: str
    cells: int
    with_truth: int
    caught: int  # defective cells rejected before the end of the line
    escapes: int
    false_calls: int
    reviews: int
    scrap_value_avoided: float
    energy_avoided_kwh: float
    co2e_avoided_kg: float
    escape_cost: float
    false_call_cost: float
    review_cost: float

    @property
    def cost_of_quality(self) -> float:
        return self.escape_cost + self.false_call_cost + self.review_cost

    @property
    def net_saving(self) -> float:
        """Scrap value avoided by early rejection minus the cost of escapes, false calls and reviews."""
        return self.scrap_value_avoided - self.cost_of_quality


def shift_of(moment: datetime, shifts: Sequence[Shift], zone: str) -> tuple[date, str]:
    """The (production day, shift) a moment falls in: a shift that runs past midnight keeps its start day."""
    local = moment.astimezone(ZoneInfo(zone))
    ordered = sorted(shifts, key=lambda s: s.start)
    started = [s for s in ordered if s.start <= local.time()]
    if started:
        return local.date(), started[-1].name
    return local.date() - timedelta(days=1), ordered[-1].name  # before the first start: yesterday's last


def cell_costs(
    period: str, cells: Sequence[CellRecord], inspections: Sequence[InspectionRecord],
    truths: Iterable[TruthRecord], costs: CostModel,
) -> CostFigures:
    """The figures of one period's cells (their inspections and truths may cover more)."""
    best = best_truths(truths)
    by_cell: dict[tuple[int, int], list[InspectionRecord]] = {}
    for r in inspections:
        by_cell.setdefault((r.run_id, r.sequence), []).append(r)
    eol = costs.end_of_line
    with_truth = caught = escapes = false_calls = reviews = 0
    scrap = energy = escape_cost = false_cost = 0.0
    for cell in cells:
        if cell.disposition is Disposition.REVIEW:
            reviews += 1
        defective = cell_truth(cell, by_cell.get((cell.run_id, cell.sequence), []), best)
        if defective is None:
            continue
        with_truth += 1
        station = costs.stations.get(cell.failed_station or "")
        if defective and cell.disposition is Disposition.OK:
            escapes += 1
            escape_cost += costs.escape
        elif defective and station is not None:
            caught += 1
            scrap += eol.value_added - station.value_added
            energy += eol.energy_kwh - station.energy_kwh
        elif not defective and cell.disposition is Disposition.NG and station is not None:
            false_calls += 1
            false_cost += station.false_call_cost
    return CostFigures(
        period=period, cells=len(cells), with_truth=with_truth, caught=caught, escapes=escapes,
        false_calls=false_calls, reviews=reviews, scrap_value_avoided=scrap, energy_avoided_kwh=energy,
        co2e_avoided_kg=energy * costs.co2e_kg_per_kwh, escape_cost=escape_cost, false_call_cost=false_cost,
        review_cost=reviews * costs.review,
    )


def costs_by_period(
    cells: Sequence[CellRecord], inspections: Sequence[InspectionRecord], truths: Sequence[TruthRecord],
    costs: CostModel, shifts: Sequence[Shift], zone: str,
) -> tuple[tuple[CostFigures, ...], tuple[CostFigures, ...]]:
    """(per day, per shift) in time order, by when each cell finished in the line's timezone."""
    days: dict[date, list[CellRecord]] = {}
    by_shift: dict[tuple[date, int, str], list[CellRecord]] = {}
    order = {s.name: i for i, s in enumerate(sorted(shifts, key=lambda s: s.start))}
    for cell in cells:
        day, shift = shift_of(cell.finished_at, shifts, zone)
        local_day = cell.finished_at.astimezone(ZoneInfo(zone)).date()
        days.setdefault(local_day, []).append(cell)
        by_shift.setdefault((day, order[shift], shift), []).append(cell)
    per_day = tuple(cell_costs(d.isoformat(), days[d], inspections, truths, costs) for d in sorted(days))
    per_shift = tuple(
        cell_costs(f"{d.isoformat()} {name}", by_shift[(d, i, name)], inspections, truths, costs)
        for d, i, name in sorted(by_shift)
    )
    return per_day, per_shift
