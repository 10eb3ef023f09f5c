"""The one rule for a cell's disposition (issue 13 #1): never OK with a station missing or an NG anywhere."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from cellsight.line.disposition import decide
from cellsight.storage.records import Disposition, InspectionRecord, Reason
from cellsight.types import Verdict

STATIONS = ["electrode", "weld", "can"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _r(station: str, verdict: Verdict, at: int = 0, reason: Reason | None = None) -> InspectionRecord:
    return InspectionRecord(1, 0, "C1", station, STATIONS.index(station), verdict, math.nan, None, reason, "v", "h",
                            1.0, None, None, T0 + timedelta(seconds=at))


def test_ok_only_when_every_station_said_ok() -> None:
    assert decide([_r(s, Verdict.OK) for s in STATIONS], STATIONS).disposition is Disposition.OK
    only_last = decide([_r("can", Verdict.OK)], STATIONS)
    assert (only_last.disposition, only_last.station, only_last.missing) == (Disposition.REVIEW, "electrode",
                                                                             ("electrode", "weld"))
    assert decide([], STATIONS).disposition is Disposition.REVIEW


def test_a_later_ng_at_an_earlier_station_decides() -> None:
    records = [_r("can", Verdict.OK, 0), _r("weld", Verdict.OK, 1), _r("electrode", Verdict.NG, 2)]
    decision = decide(records, STATIONS)
    assert (decision.disposition, decision.station) == (Disposition.NG, "electrode")


def test_ng_wins_over_error_and_the_deciding_station_is_named() -> None:
    records = [_r("electrode", Verdict.ERROR, reason=Reason.BAD_IMAGE), _r("weld", Verdict.NG), _r("can", Verdict.OK)]
    decision = decide(records, STATIONS)
    assert (decision.disposition, decision.station, decision.reason) == (Disposition.NG, "weld", None)
    errors = decide([_r("electrode", Verdict.OK), _r("weld", Verdict.ERROR, reason=Reason.NO_IMAGE)], STATIONS)
    assert (errors.disposition, errors.station, errors.reason) == (Disposition.REVIEW, "weld", Reason.NO_IMAGE)
