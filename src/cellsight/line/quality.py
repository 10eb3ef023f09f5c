"""A quality engineer's figures for a line: FPY, RTY, final yield, defect Pareto, p-chart, genealogy.

Pure functions over the store's plain records (`cellsight.storage.records`): no SQL, no I/O. Every figure
is computed from what actually entered a station, so "reject at once" (an NG cell skips later stations)
and "inspect all" lines are both counted right. ERROR is never a pass.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

import numpy as np

from cellsight.metrics.intervals import wilson_interval
from cellsight.storage.records import CellRecord, Disposition, InspectionRecord, Reason
from cellsight.types import Verdict

# A cell whose decoded ID cannot identify it: every such passage through the line is its own cell.
_UNTRUSTED_ID = frozenset({Reason.UNREADABLE_CODE, Reason.DUPLICATE_ID})


@dataclass(frozen=True)
class StationYield:
    """First-pass yield of one station. `fpy` and `interval` are None when no cell entered it."""

    station: str
    inspected: int  # distinct cells that entered the station (first inspections)
    passed: int  # of those, OK at their first inspection
    ng: int
    error: int
    reinspections: int  # inspections after a cell's first one at this station (not in FPY)
    fpy: float | None
    interval: tuple[float, float] | None  # Wilson score 95%
    mean_latency_ms: float | None  # over every inspection at the station
    p95_latency_ms: float | None


@dataclass(frozen=True)
class FinalYield:
    """End-of-line yield from the cells' dispositions; REVIEW is not OK (it is never shipped as OK)."""

    cells: int
    ok: int
    ng: int
    review: int
    final_yield: float | None
    interval: tuple[float, float] | None


@dataclass(frozen=True)
class ParetoItem:
    """One bar of the defect Pareto. `kind` is "defect" (the model's class) or "reason" (the line's finding)."""

    category: str
    kind: str
    count: int
    share: float
    cumulative_share: float  # ends at exactly 1.0
    by_station: tuple[tuple[str, int], ...]  # line order, stations with a count only


@dataclass(frozen=True)
class Subgroup:
    """One point of the p-chart."""

    index: int
    label: str  # "run 3 #100-149" or the bucket's start time
    n: int
    rejects: int
    p: float
    ucl: float
    lcl: float
    beyond_limits: bool  # Western Electric rule 1: a point outside the 3-sigma limits
    in_run: bool  # part of a run of `run_length` points on one side of the centre line


@dataclass(frozen=True)
class PChart:
    """p-chart (attribute control chart, varying subgroup size) of the line's reject rate."""

    centre: float | None  # p-bar over all subgroups; None without cells
    subgroups: tuple[Subgroup, ...]
    basis: str  # "sequence" or "time"
    subgroup_size: int | None
    bucket_seconds: float | None
    run_length: int

    @property
    def out_of_control(self) -> tuple[Subgroup, ...]:
        """The subgroups that signal: beyond the limits or part of a run."""
        return tuple(s for s in self.subgroups if s.beyond_limits or s.in_run)


@dataclass(frozen=True)
class Genealogy:
    """Everything the line knows about one cell ID, oldest first."""

    cell_id: str
    inspections: tuple[InspectionRecord, ...]  # time order across runs and stations
    dispositions: tuple[CellRecord, ...]

    @property
    def found(self) -> bool:
        return bool(self.inspections or self.dispositions)


@dataclass(frozen=True)
class LineQuality:
    """All the figures of one report."""

    stations: tuple[StationYield, ...]
    rty: float | None  # product of the defined station FPYs; None when no station has one
    final: FinalYield
    pareto: tuple[ParetoItem, ...]
    pchart: PChart
    inspections: int

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON types (NaN -> null, datetimes ISO 8601), for the API and `--json` output."""
        data = asdict(self)
        data["pchart"]["out_of_control"] = [s.index for s in self.pchart.out_of_control]
        result: dict[str, Any] = _plain(data)
        return result


def genealogy_json(genealogy: Genealogy) -> dict[str, Any]:
    """A genealogy as plain JSON types."""
    result: dict[str, Any] = _plain(asdict(genealogy))
    return result


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _ordered_stations(records: Iterable[InspectionRecord], stations: Sequence[str]) -> list[str]:
    """The given order, then any station seen in the records but not named (by station_index, name)."""
    known = list(dict.fromkeys(stations))
    extra: dict[str, int] = {}
    for r in records:
        if r.station not in known:
            extra[r.station] = min(extra.get(r.station, r.station_index), r.station_index)
    return known + sorted(extra, key=lambda s: (extra[s], s))


def _time_key(r: InspectionRecord) -> tuple[datetime, int, int, int]:
    return (r.inspected_at, r.run_id, r.sequence, r.station_index)


def _cell_keys(inspections: Sequence[InspectionRecord]) -> list[tuple[Any, ...]]:
    """Who each inspection was of: the cell ID, or the passage (run, sequence) when the ID is not trusted.

    An unreadable code or a duplicated ID cannot tell two physical cells apart, so such a passage is
    never merged with another cell's inspections (that would hide its ERROR as a "re-inspection").
    """
    untrusted = {(r.run_id, r.sequence) for r in inspections if r.reason in _UNTRUSTED_ID}
    return [
        ("passage", r.run_id, r.sequence) if (r.run_id, r.sequence) in untrusted else ("id", r.cell_id)
        for r in inspections
    ]


def station_yields(inspections: Sequence[InspectionRecord], stations: Sequence[str]) -> tuple[StationYield, ...]:
    """First-pass yield per station, in line order.

    FPY = cells OK at their first inspection at the station / cells that entered it (IEC/automotive
    usage: re-inspections and re-work do not count). ERROR counts as not passed. Wilson score 95% interval.
    """
    order = sorted(range(len(inspections)), key=lambda i: _time_key(inspections[i]))
    keys = _cell_keys(inspections)
    first: dict[tuple[str, tuple[Any, ...]], InspectionRecord] = {}
    repeats: Counter[str] = Counter()
    latencies: defaultdict[str, list[float]] = defaultdict(list)
    for i in order:
        r = inspections[i]
        latencies[r.station].append(r.latency_ms)
        slot = (r.station, keys[i])
        if slot in first:
            repeats[r.station] += 1
        else:
            first[slot] = r
    verdicts: defaultdict[str, Counter[Verdict]] = defaultdict(Counter)
    for (station, _), r in first.items():
        verdicts[station][r.verdict] += 1
    result = []
    for station in _ordered_stations(inspections, stations):
        counts = verdicts[station]
        n, ok = sum(counts.values()), counts[Verdict.OK]
        lat = np.asarray([x for x in latencies[station] if math.isfinite(x)], dtype=np.float64)
        result.append(
            StationYield(
                station=station,
                inspected=n,
                passed=ok,
                ng=counts[Verdict.NG],
                error=counts[Verdict.ERROR],
                reinspections=repeats[station],
                fpy=ok / n if n else None,
                interval=wilson_interval(ok, n) if n else None,
                mean_latency_ms=float(lat.mean()) if lat.size else None,
                p95_latency_ms=float(np.percentile(lat, 95)) if lat.size else None,
            )
        )
    return tuple(result)


def rolled_throughput_yield(yields: Sequence[StationYield]) -> float | None:
    """RTY = product of the station FPYs: the chance a cell passes every station first time.

    Stations no cell entered (FPY undefined) are left out; None when no station has an FPY.
    """
    defined = [y.fpy for y in yields if y.fpy is not None]
    return float(np.prod(defined)) if defined else None


def final_yield(cells: Sequence[CellRecord]) -> FinalYield:
    """OK dispositions / cells finished, one count per cell record (a re-run cell counts in each run)."""
    counts = Counter(c.disposition for c in cells)
    n, ok = len(cells), counts[Disposition.OK]
    return FinalYield(
        cells=n,
        ok=ok,
        ng=counts[Disposition.NG],
        review=counts[Disposition.REVIEW],
        final_yield=ok / n if n else None,
        interval=wilson_interval(ok, n) if n else None,
    )


def _category(r: InspectionRecord) -> tuple[str, str]:
    """The line's own finding wins over the model's class: a bad image is not a crack."""
    if r.reason is not None:
        return r.reason.value, "reason"
    if r.verdict is Verdict.ERROR:
        return "error (no reason)", "reason"
    return r.defect_class or "unclassified", "defect"


def defect_pareto(
    inspections: Sequence[InspectionRecord], stations: Sequence[str] = (), station: str | None = None
) -> tuple[ParetoItem, ...]:
    """Pareto of every non-OK inspection (re-inspections included), biggest first, with cumulative share.

    ERROR and REVIEW reasons (bad_image, unreadable_code, duplicate_id, ...) are categories of their own,
    so the bars always add up to all non-OK inspections. `station` restricts it to one station.
    """
    bad = [r for r in inspections if r.verdict is not Verdict.OK and (station is None or r.station == station)]
    order = _ordered_stations(inspections, stations)
    counts: Counter[tuple[str, str]] = Counter()
    per_station: defaultdict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for r in bad:
        key = _category(r)
        counts[key] += 1
        per_station[key][r.station] += 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0][1], kv[0][0]))
    total = len(bad)
    cumulative = np.cumsum([c for _, c in ranked]) if ranked else np.zeros(0, dtype=np.int64)
    return tuple(
        ParetoItem(
            category=name,
            kind=kind,
            count=count,
            share=count / total,
            cumulative_share=float(cumulative[i]) / total,
            by_station=tuple((s, per_station[(name, kind)][s]) for s in order if per_station[(name, kind)][s]),
        )
        for i, ((name, kind), count) in enumerate(ranked)
    )


def _runs_one_side(above: np.ndarray, below: np.ndarray, run_length: int) -> np.ndarray:
    """Mask of points inside a run of >= run_length consecutive points strictly on one side."""
    flags = np.zeros(above.size, dtype=bool)
    for side in (above, below):
        start = None
        for i, on_side in enumerate([*side.tolist(), False]):
            if on_side and start is None:
                start = i
            elif not on_side and start is not None:
                if i - start >= run_length:
                    flags[start:i] = True
                start = None
    return flags


def _subgroups_by_sequence(cells: Sequence[CellRecord], size: int) -> list[tuple[str, list[CellRecord]]]:
    ordered = sorted(cells, key=lambda c: (c.run_id, c.sequence))
    groups = []
    for start in range(0, len(ordered), size):
        chunk = ordered[start : start + size]
        a, b = chunk[0], chunk[-1]
        label = (
            f"run {a.run_id} #{a.sequence}-{b.sequence}"
            if a.run_id == b.run_id
            else (f"run {a.run_id} #{a.sequence}-run {b.run_id} #{b.sequence}")
        )
        groups.append((label, chunk))
    return groups


def _subgroups_by_time(cells: Sequence[CellRecord], bucket: timedelta) -> list[tuple[str, list[CellRecord]]]:
    ordered = sorted(cells, key=lambda c: (c.finished_at, c.run_id, c.sequence))
    start = ordered[0].finished_at
    buckets: dict[int, list[CellRecord]] = {}
    for c in ordered:
        buckets.setdefault(int((c.finished_at - start) // bucket), []).append(c)
    return [((start + k * bucket).isoformat(timespec="seconds"), buckets[k]) for k in sorted(buckets)]


def p_chart(
    cells: Sequence[CellRecord], subgroup_size: int = 50, bucket: timedelta | None = None, run_length: int = 8
) -> PChart:
    """p-chart of the reject rate (NG or REVIEW) per subgroup, with per-subgroup 3-sigma limits.

    Subgroups: `subgroup_size` consecutive cells by (run, sequence), or the cells finished in each `bucket`
    of time (empty buckets have no point). Centre line p-bar = all rejects / all cells;
    limits p-bar ± 3·sqrt(p-bar(1-p-bar)/n_i) clipped to [0, 1] (Shewhart, varying n). Signals: Western
    Electric rule 1 (a point beyond a limit) and the run rule (`run_length` points in a row strictly on
    one side of the centre line: 8 is Western Electric rule 4 / AIAG; Nelson's rule 2 uses 9).
    """
    if subgroup_size < 1 or run_length < 2:
        raise ValueError(f"need subgroup_size >= 1 and run_length >= 2, got {subgroup_size}, {run_length}")
    if bucket is not None and bucket <= timedelta(0):
        raise ValueError(f"time bucket must be positive, got {bucket}")
    basis = "time" if bucket is not None else "sequence"
    size = None if bucket is not None else subgroup_size
    seconds = bucket.total_seconds() if bucket is not None else None
    if not cells:
        return PChart(None, (), basis, size, seconds, run_length)
    groups = _subgroups_by_time(cells, bucket) if bucket is not None else _subgroups_by_sequence(cells, subgroup_size)
    n = np.asarray([len(g) for _, g in groups], dtype=np.int64)
    d = np.asarray([sum(c.disposition is not Disposition.OK for c in g) for _, g in groups], dtype=np.int64)
    total_n, total_d = int(n.sum()), int(d.sum())
    centre = total_d / total_n
    p = d / n
    sigma = np.sqrt(centre * (1.0 - centre) / n)
    ucl, lcl = np.minimum(1.0, centre + 3 * sigma), np.maximum(0.0, centre - 3 * sigma)
    # Sides compared in integers (d_i/n_i vs D/N) so a point on the centre line is exactly on it.
    above, below = d * total_n > total_d * n, d * total_n < total_d * n
    in_run = _runs_one_side(above, below, run_length)
    beyond = (p > ucl) | (p < lcl)
    subgroups = tuple(
        Subgroup(
            i, label, int(n[i]), int(d[i]), float(p[i]), float(ucl[i]), float(lcl[i]), bool(beyond[i]), bool(in_run[i])
        )
        for i, (label, _) in enumerate(groups)
    )
    return PChart(centre, subgroups, basis, size, seconds, run_length)


def genealogy(cell_id: str, inspections: Sequence[InspectionRecord], cells: Sequence[CellRecord]) -> Genealogy:
    """All inspections of one cell ID across stations and runs in time order, and its dispositions."""
    return Genealogy(
        cell_id=cell_id,
        inspections=tuple(sorted((r for r in inspections if r.cell_id == cell_id), key=_time_key)),
        dispositions=tuple(
            sorted((c for c in cells if c.cell_id == cell_id), key=lambda c: (c.finished_at, c.run_id, c.sequence))
        ),
    )


def line_quality(
    inspections: Sequence[InspectionRecord],
    cells: Sequence[CellRecord],
    stations: Sequence[str],
    subgroup_size: int = 50,
    bucket: timedelta | None = None,
    run_length: int = 8,
) -> LineQuality:
    """Every figure of the line report in one call; `stations` is the line's order."""
    yields = station_yields(inspections, stations)
    return LineQuality(
        stations=yields,
        rty=rolled_throughput_yield(yields),
        final=final_yield(cells),
        pareto=defect_pareto(inspections, stations),
        pchart=p_chart(cells, subgroup_size=subgroup_size, bucket=bucket, run_length=run_length),
        inspections=len(inspections),
    )
