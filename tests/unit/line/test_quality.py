"""Quality figures on hand-built records with known answers, and their invariants."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellsight.line.quality import (
    defect_pareto,
    final_yield,
    genealogy,
    line_quality,
    p_chart,
    rolled_throughput_yield,
    station_yields,
)
from cellsight.metrics import wilson_interval
from cellsight.storage.records import CellRecord, Disposition, InspectionRecord, Reason
from cellsight.types import Verdict

STATIONS = ("cosmetic", "el", "ir")
Line = tuple[list[InspectionRecord], list[CellRecord]]
MakeInspection = Callable[..., InspectionRecord]
MakeCell = Callable[..., CellRecord]


def test_reject_at_once_line_has_the_known_yields(line_records: Line) -> None:
    inspections, cells = line_records
    quality = line_quality(inspections, cells, STATIONS)
    cosmetic, el, ir = quality.stations
    assert [s.station for s in quality.stations] == list(STATIONS)
    assert (cosmetic.inspected, cosmetic.passed, cosmetic.ng, cosmetic.error) == (100, 88, 10, 2)
    assert (el.inspected, el.passed, el.ng, el.error) == (88, 80, 8, 0)  # only the cells that entered
    assert (ir.inspected, ir.passed, ir.ng, ir.error) == (80, 75, 4, 1)
    assert cosmetic.fpy == pytest.approx(0.88) and el.fpy == pytest.approx(80 / 88) and ir.fpy == pytest.approx(75 / 80)
    assert cosmetic.interval == wilson_interval(88, 100)
    assert quality.rty == pytest.approx(0.75)  # reject at once: RTY equals the final yield
    assert (cosmetic.mean_latency_ms, el.mean_latency_ms, ir.p95_latency_ms) == (10.0, 20.0, 30.0)
    final = quality.final
    assert (final.cells, final.ok, final.ng, final.review, final.final_yield) == (100, 75, 22, 3, 0.75)
    assert final.interval == wilson_interval(75, 100)


def test_inspect_all_counts_every_cell_at_every_station(make_inspection: MakeInspection) -> None:
    records = []
    for seq in range(10):
        first = Verdict.NG if seq < 4 else Verdict.OK
        second = Verdict.ERROR if seq % 5 == 0 else Verdict.OK
        records.append(make_inspection(f"C{seq}", "cosmetic", first, sequence=seq, minutes=seq))
        records.append(make_inspection(f"C{seq}", "el", second, sequence=seq, minutes=seq + 0.1))
    cosmetic, el = station_yields(records, ["cosmetic", "el"])
    assert (cosmetic.inspected, cosmetic.passed) == (10, 6)
    assert (el.inspected, el.passed, el.error) == (10, 8, 2)
    assert rolled_throughput_yield((cosmetic, el)) == pytest.approx(0.6 * 0.8)


def test_error_is_never_a_pass(make_inspection: MakeInspection) -> None:
    records = [make_inspection(f"C{i}", "el", Verdict.ERROR, sequence=i, reason=Reason.BAD_IMAGE) for i in range(5)]
    (el,) = station_yields(records, ["el"])
    assert (el.inspected, el.passed, el.error, el.fpy) == (5, 0, 5, 0.0)


def test_only_the_first_inspection_counts(make_inspection: MakeInspection) -> None:
    first = make_inspection("C1", "el", Verdict.NG, run_id=1, minutes=0, defect="crack")
    again = make_inspection("C1", "el", Verdict.OK, run_id=2, minutes=30)
    other = make_inspection("C2", "el", Verdict.OK, run_id=1, sequence=1, minutes=1)
    (el,) = station_yields([again, other, first], ["el"])  # input order does not matter: time does
    assert (el.inspected, el.passed, el.reinspections, el.fpy) == (2, 1, 1, 0.5)


def test_a_duplicated_id_is_a_cell_of_its_own(make_inspection: MakeInspection) -> None:
    original = make_inspection("C1", "el", Verdict.OK, sequence=0, minutes=0)
    duplicate = make_inspection("C1", "el", Verdict.ERROR, sequence=7, minutes=7, reason=Reason.DUPLICATE_ID)
    unread = [
        make_inspection(f"UNREAD-1-{s}", "el", Verdict.ERROR, sequence=s, reason=Reason.UNREADABLE_CODE) for s in (8, 9)
    ]
    (el,) = station_yields([original, duplicate, *unread], ["el"])
    assert (el.inspected, el.passed, el.error, el.reinspections) == (4, 1, 3, 0)


def test_unlisted_station_comes_after_the_line(make_inspection: MakeInspection) -> None:
    records = [make_inspection("C1", "extra", Verdict.OK), make_inspection("C1", "el", Verdict.OK)]
    assert [s.station for s in station_yields(records, STATIONS)] == [*STATIONS, "extra"]


def test_empty_inputs_give_undefined_figures_not_a_crash() -> None:
    quality = line_quality([], [], STATIONS)
    assert [s.fpy for s in quality.stations] == [None, None, None]
    assert all(s.interval is None and s.mean_latency_ms is None for s in quality.stations)
    assert quality.rty is None
    assert quality.final.final_yield is None and quality.final.cells == 0
    assert quality.pareto == () and quality.pchart.subgroups == () and quality.pchart.centre is None
    assert json.loads(json.dumps(quality.to_json_dict(), allow_nan=False))["rty"] is None


def test_station_nobody_entered_is_undefined_and_left_out_of_rty(make_inspection: MakeInspection) -> None:
    records = [make_inspection(f"C{i}", "cosmetic", Verdict.OK if i else Verdict.NG, sequence=i) for i in range(4)]
    yields = station_yields(records, STATIONS)
    assert [y.fpy for y in yields] == [0.75, None, None]
    assert rolled_throughput_yield(yields) == 0.75


def test_pareto_is_sorted_and_ends_at_100_percent(line_records: Line) -> None:
    inspections, _ = line_records
    pareto = defect_pareto(inspections, STATIONS)
    assert [(p.category, p.count) for p in pareto] == [
        ("scratch", 10),
        ("crack", 6),
        ("hotspot", 4),
        ("finger", 2),  # ties: the model's classes before the line's reasons
        ("bad_image", 2),
        ("inspection_failed", 1),
    ]
    assert [p.kind for p in pareto][-2:] == ["reason", "reason"]
    assert [p.cumulative_share for p in pareto] == pytest.approx([0.4, 0.64, 0.8, 0.88, 0.96, 1.0])
    assert pareto[-1].cumulative_share == 1.0
    assert pareto[0].by_station == (("cosmetic", 10),)
    assert [p.category for p in defect_pareto(inspections, STATIONS, station="ir")] == [
        "hotspot",
        "inspection_failed",
    ]


def test_pareto_keeps_error_reasons_and_unclassified(make_inspection: MakeInspection) -> None:
    records = [
        make_inspection("A", "el", Verdict.NG),  # NG without a class
        make_inspection("B", "el", Verdict.ERROR),  # ERROR without a reason
        make_inspection("C", "el", Verdict.NG, defect="crack", reason=Reason.ID_MISMATCH),  # the line's finding wins
        make_inspection("D", "el", Verdict.OK),
    ]
    assert sorted(p.category for p in defect_pareto(records)) == ["error (no reason)", "id_mismatch", "unclassified"]


def test_p_chart_limits_follow_the_formula(line_records: Line) -> None:
    _, cells = line_records
    chart = p_chart(cells, subgroup_size=50)
    assert chart.centre == 0.25
    assert [(s.n, s.rejects) for s in chart.subgroups] == [(50, 25), (50, 0)]
    sigma = math.sqrt(0.25 * 0.75 / 50)
    for s in chart.subgroups:
        assert s.ucl == pytest.approx(0.25 + 3 * sigma) and s.lcl == pytest.approx(0.25 - 3 * sigma)
    assert [s.beyond_limits for s in chart.subgroups] == [True, True]
    assert chart.subgroups[0].label == "run 1 #0-49"


def test_p_chart_flags_a_constructed_out_of_control_subgroup(make_cell: MakeCell) -> None:
    # 20 subgroups of 10 alternating 0 and 2 rejects (no run), except subgroup 12 with 7 rejects.
    rejects = [7 if group == 12 else 2 * (group % 2) for group in range(20)]
    chart = p_chart(_cells_with_rejects(make_cell, rejects), subgroup_size=10)
    p_bar = 27 / 200
    assert chart.centre == pytest.approx(p_bar)
    ucl = p_bar + 3 * math.sqrt(p_bar * (1 - p_bar) / 10)
    assert chart.subgroups[12].ucl == pytest.approx(ucl) and chart.subgroups[12].lcl == 0.0  # clipped at 0
    assert [s.index for s in chart.subgroups if s.beyond_limits] == [12]
    assert [s.index for s in chart.out_of_control] == [12]


def test_partial_last_subgroup_gets_its_own_wider_limits(make_cell: MakeCell) -> None:
    cells = [make_cell(f"C{i}", Disposition.NG if i % 4 == 0 else Disposition.OK, sequence=i) for i in range(105)]
    chart = p_chart(cells, subgroup_size=50)
    assert [s.n for s in chart.subgroups] == [50, 50, 5]
    assert chart.subgroups[2].ucl > chart.subgroups[0].ucl


def _cells_with_rejects(make_cell: MakeCell, rejects_per_group: list[int], size: int = 10) -> list[CellRecord]:
    cells = []
    for group, rejects in enumerate(rejects_per_group):
        for pos in range(size):
            seq = group * size + pos
            cells.append(make_cell(f"C{seq}", Disposition.NG if pos < rejects else Disposition.OK, sequence=seq))
    return cells


def test_run_of_eight_on_one_side_is_flagged(make_cell: MakeCell) -> None:
    chart = p_chart(_cells_with_rejects(make_cell, [2] * 8 + [0, 2] * 6), subgroup_size=10)
    assert chart.centre == pytest.approx(0.14)
    assert not any(s.beyond_limits for s in chart.subgroups)
    assert [s.index for s in chart.subgroups if s.in_run] == list(range(8))


def test_run_of_seven_is_not_and_the_centre_line_breaks_a_run(make_cell: MakeCell) -> None:
    # p-bar = 0.2 exactly: subgroup 4 (2 of 10) sits on the centre line and splits 8 "above" into 4 + 3.
    chart = p_chart(_cells_with_rejects(make_cell, [3] * 7 + [1, 3, 1, 3, 1, 1, 1, 1]), subgroup_size=10)
    assert not any(s.in_run for s in chart.subgroups)
    on_line = [3, 3, 3, 3, 2, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1]
    chart = p_chart(_cells_with_rejects(make_cell, on_line), subgroup_size=10)
    assert chart.centre == pytest.approx(0.2)
    assert not any(s.in_run for s in chart.subgroups)
    assert [s.index for s in p_chart(_cells_with_rejects(make_cell, on_line), 10, run_length=7).out_of_control] == [
        *range(8, 15)
    ]


def test_p_chart_by_time_bucket(line_records: Line) -> None:
    _, cells = line_records  # one cell a minute
    chart = p_chart(cells, bucket=timedelta(minutes=10))
    assert chart.basis == "time" and chart.bucket_seconds == 600
    assert [s.n for s in chart.subgroups] == [10] * 10
    assert [s.rejects for s in chart.subgroups] == [10, 10, 5, 0, 0, 0, 0, 0, 0, 0]
    assert chart.subgroups[0].label == "2025-03-01T08:00:30"


def test_p_chart_rejects_bad_settings(make_cell: MakeCell) -> None:
    with pytest.raises(ValueError, match="subgroup_size"):
        p_chart([make_cell("C", Disposition.OK)], subgroup_size=0)
    with pytest.raises(ValueError, match="bucket"):
        p_chart([make_cell("C", Disposition.OK)], bucket=timedelta(0))


def test_genealogy_is_in_time_order_across_runs(make_inspection: MakeInspection, make_cell: MakeCell) -> None:
    records = [
        make_inspection("C7", "el", Verdict.OK, run_id=2, minutes=60),
        make_inspection("C7", "cosmetic", Verdict.OK, run_id=1, minutes=0),
        make_inspection("C8", "el", Verdict.OK, run_id=1, minutes=1),
        make_inspection("C7", "el", Verdict.ERROR, run_id=1, minutes=0.5, reason=Reason.BAD_IMAGE),
    ]
    cells = [
        make_cell("C7", Disposition.OK, run_id=2, minutes=61),
        make_cell("C7", Disposition.REVIEW, run_id=1, minutes=1),
    ]
    history = genealogy("C7", records, cells)
    assert history.found
    assert [(r.run_id, r.station, r.verdict) for r in history.inspections] == [
        (1, "cosmetic", Verdict.OK),
        (1, "el", Verdict.ERROR),
        (2, "el", Verdict.OK),
    ]
    assert [c.disposition for c in history.dispositions] == [Disposition.REVIEW, Disposition.OK]
    assert not genealogy("nobody", records, cells).found


def test_final_yield_counts_review_as_not_ok(make_cell: MakeCell) -> None:
    cells = [make_cell("A", Disposition.OK), make_cell("B", Disposition.REVIEW), make_cell("C", Disposition.NG)]
    final = final_yield(cells)
    assert (final.ok, final.ng, final.review, final.final_yield) == (1, 1, 1, pytest.approx(1 / 3))


def test_json_export_is_strict_and_complete(line_records: Line) -> None:
    inspections, cells = line_records
    data = line_quality(inspections, cells, STATIONS, subgroup_size=50).to_json_dict()
    text = json.dumps(data, allow_nan=False)
    back = json.loads(text)
    assert back["stations"][0]["station"] == "cosmetic" and back["stations"][0]["interval"] == list(
        wilson_interval(88, 100)
    )
    assert back["rty"] == pytest.approx(0.75) and back["final"]["review"] == 3
    assert back["pareto"][0]["category"] == "scratch" and back["pchart"]["out_of_control"] == [0, 1]


VERDICTS = st.sampled_from([Verdict.OK, Verdict.OK, Verdict.OK, Verdict.NG, Verdict.ERROR])


@settings(max_examples=60, deadline=None)
@given(
    plan=st.lists(st.tuples(st.lists(VERDICTS, min_size=3, max_size=3), st.booleans()), max_size=40),
    reject_at_once=st.booleans(),
    subgroup_size=st.integers(1, 12),
)
def test_invariants_hold_on_any_line(
    make_inspection: MakeInspection,
    make_cell: MakeCell,
    plan: list[tuple[list[Verdict], bool]],
    reject_at_once: bool,
    subgroup_size: int,
) -> None:
    inspections, cells = [], []
    for seq, (verdicts, reinspect) in enumerate(plan):
        for k, (station, verdict) in enumerate(zip(STATIONS, verdicts, strict=True)):
            inspections.append(make_inspection(f"C{seq}", station, verdict, sequence=seq, minutes=seq + k / 10))
            if reinspect:
                inspections.append(
                    make_inspection(f"C{seq}", station, Verdict.OK, run_id=2, sequence=seq, minutes=1000 + seq)
                )
            if reject_at_once and verdict is not Verdict.OK:
                break
        fate = Disposition.OK if all(v is Verdict.OK for v in verdicts) else Disposition.NG
        cells.append(make_cell(f"C{seq}", fate, sequence=seq, minutes=seq))
    quality = line_quality(inspections, cells, STATIONS, subgroup_size=subgroup_size)
    fpys = [s.fpy for s in quality.stations if s.fpy is not None]
    assert all(0.0 <= f <= 1.0 for f in fpys)
    if fpys:
        assert quality.rty is not None and quality.rty <= min(fpys) + 1e-12
    else:
        assert quality.rty is None
    non_ok = sum(r.verdict is not Verdict.OK for r in inspections)
    assert sum(p.count for p in quality.pareto) == non_ok
    if quality.pareto:
        assert quality.pareto[-1].cumulative_share == 1.0
        assert all(a.count >= b.count for a, b in zip(quality.pareto, quality.pareto[1:], strict=False))
    assert sum(s.inspected for s in quality.stations[:1]) == len(plan)
    for s in quality.pchart.subgroups:
        assert 0.0 <= s.lcl <= s.ucl <= 1.0
    json.dumps(quality.to_json_dict(), allow_nan=False)
