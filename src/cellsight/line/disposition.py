"""The one rule that decides a cell: used by `line run`, the service's recorder and so the PLC link.

A cell is OK only when every station of the line has inspected it and each said OK. Any NG makes it NG
(whichever station, whenever it arrives: a later NG overrides an earlier decision); otherwise any ERROR, or
a station that has not seen the cell, makes it REVIEW: a person decides, the line never ships it as OK.
The station named is the one that decided: the first NG in line order, else the first ERROR, else the
first station missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cellsight.storage.records import Disposition, InspectionRecord, Reason
from cellsight.types import Verdict


@dataclass(frozen=True)
class CellDecision:
    disposition: Disposition
    station: str | None  # the station that decided a non-OK disposition
    reason: Reason | None  # that inspection's line reason (None for a model's NG or a missing station)
    missing: tuple[str, ...]  # stations that have not inspected the cell, in line order


def decide(records: Iterable[InspectionRecord], stations: Sequence[str]) -> CellDecision:
    """The disposition of one cell from all its inspections (one run, one sequence) and the line's stations."""
    order = {name: index for index, name in enumerate(stations)}
    seen = sorted(records, key=lambda r: (order.get(r.station, len(order)), r.inspected_at))
    missing = tuple(s for s in stations if s not in {r.station for r in seen})
    for verdict, disposition in ((Verdict.NG, Disposition.NG), (Verdict.ERROR, Disposition.REVIEW)):
        first = next((r for r in seen if r.verdict is verdict), None)
        if first is not None:
            return CellDecision(disposition, first.station, first.reason, missing)
    if missing or not seen:
        return CellDecision(Disposition.REVIEW, missing[0] if missing else None, None, missing)
    return CellDecision(Disposition.OK, None, None, missing)
