"""Escape and overkill against truth: what the line passed that was defective, what it rejected that was good.

Pure functions over the store's records. Truth for an inspection comes from the most trusted source that
has one (`TRUST_ORDER`: a synthetic source knows it by construction, then teardown, audit, review).
Two views:

* **Full truth** (`truth_rates`): every inspection or cell with a known truth, for a synthetic line all of
  them. Columns of the confusion matrix are the line's calls: OK, NG, and REVIEW (a station that could not
  decide, or an unreadable image: never a pass). Escape = defective called OK / defective; overkill = good
  called NG / good; good cells sent to review are counted apart (they cost a look, not a cell).
* **Sampled** (`sampled_estimate`): what a real line can know without a synthetic source: an audit of a
  random share of OK cells measures the share of defective cells among those shipped, the reviews of
  rejected cells the share of good ones among those rejected; both scale to the whole run with the
  sample sizes shown.

A cell is defective when any of its inspections' truth is a defect, good when every inspection it had
has a good truth; a cell rejected early has no truth for stations it never reached (a rare second defect
there is unseen, which can only overstate the line's overkill, never hide an escape).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cellsight.metrics.operating_point import RateWithInterval
from cellsight.storage.records import TRUST_ORDER, CellRecord, Disposition, InspectionRecord, TruthRecord, TruthSource
from cellsight.types import Verdict

Key = tuple[int, int, str]  # (run, sequence, station)
CALLS = ("OK", "NG", "REVIEW")


@dataclass(frozen=True)
class Confusion:
    """Counts of (truth, call): truth "good" or "defective", call OK, NG or REVIEW."""

    good: tuple[int, int, int]
    defective: tuple[int, int, int]

    @property
    def n(self) -> int:
        return sum(self.good) + sum(self.defective)


@dataclass(frozen=True)
class TruthRates:
    """One station's (or the line's, scope "line") calls against truth."""

    scope: str
    inspected: int  # inspections (cells, for the line) in the run
    with_truth: int
    confusion: Confusion
    escape: RateWithInterval  # defective called OK / defective
    overkill: RateWithInterval  # good called NG / good
    good_to_review: RateWithInterval  # good sent to a person / good
    sources: tuple[tuple[str, int], ...]  # where the truths came from


@dataclass(frozen=True)
class SampledEstimate:
    """Escape and overkill as a real line measures them: from an audit of OK cells and reviews of rejects."""

    shipped: int  # cells the line passed
    audited: int  # of those, audited with a truth
    found_defective: int
    outgoing_defective: RateWithInterval  # share of defective cells among the shipped, from the audit
    rejected: int  # cells NG or REVIEW
    reviewed: int  # of those, with a review (or teardown) truth
    found_good: int
    false_call_share: RateWithInterval  # share of good cells among the rejected, from the reviews
    escapes: tuple[float, float, float]  # estimated escaped cells: estimate, 95% low, high
    escape_rate: tuple[float, float, float] | None  # estimated escapes / estimated defective cells
    overkill_rate: tuple[float, float, float] | None  # estimated false calls / estimated good cells


@dataclass(frozen=True)
class NamingAgainstTruth:
    """The defect names on NG calls against the true class: where "unknown" (and wrong names) come from."""

    ng_with_truth: int
    named_right: int  # defective, named its true class
    named_wrong: int  # defective, named another class
    unknown_on_defective: int  # defective, no class close enough ("unknown" or unnamed)
    named_on_good: int  # a false call that got a defect name
    unknown_on_good: int  # a false call named "unknown": nothing it resembles, because nothing is there

    @property
    def unknown(self) -> int:
        return self.unknown_on_defective + self.unknown_on_good


_UNNAMED = frozenset({None, "", "unknown", "anomaly", "unclassified"})


def naming_against_truth(inspections: Sequence[InspectionRecord], truths: Iterable[TruthRecord]) -> NamingAgainstTruth:
    """Count every NG inspection with a truth by what it was named and what it really was."""
    best = best_truths(truths)
    counts: Counter[str] = Counter()
    for r in inspections:
        truth = best.get((r.run_id, r.sequence, r.station))
        if r.verdict is not Verdict.NG or truth is None:
            continue
        counts["n"] += 1
        unnamed = r.defect_class in _UNNAMED
        if not truth.defective:
            counts["unknown_on_good" if unnamed else "named_on_good"] += 1
        elif unnamed:
            counts["unknown_on_defective"] += 1
        else:
            counts["named_right" if r.defect_class == truth.true_class else "named_wrong"] += 1
    return NamingAgainstTruth(counts["n"], counts["named_right"], counts["named_wrong"], counts["unknown_on_defective"],
                              counts["named_on_good"], counts["unknown_on_good"])


def best_truths(truths: Iterable[TruthRecord], exclude: Sequence[TruthSource] = ()) -> dict[Key, TruthRecord]:
    """One truth per inspection: the most trusted source's (see `TRUST_ORDER`)."""
    rank = {source: i for i, source in enumerate(TRUST_ORDER)}
    best: dict[Key, TruthRecord] = {}
    for t in truths:
        if t.source in exclude:
            continue
        key = (t.run_id, t.sequence, t.station)
        if key not in best or rank[t.source] < rank[best[key].source]:
            best[key] = t
    return best


def _call(verdict: Verdict | Disposition) -> int:
    return {"OK": 0, "NG": 1}.get(verdict.value, 2)


def _rates(scope: str, inspected: int, pairs: list[tuple[bool, int]], sources: Counter[str]) -> TruthRates:
    good, defective = [0, 0, 0], [0, 0, 0]
    for is_defective, call in pairs:
        (defective if is_defective else good)[call] += 1
    n_good, n_defective = sum(good), sum(defective)
    confusion = Confusion((good[0], good[1], good[2]), (defective[0], defective[1], defective[2]))
    return TruthRates(
        scope=scope, inspected=inspected, with_truth=len(pairs), confusion=confusion,
        escape=RateWithInterval.of(defective[0], n_defective), overkill=RateWithInterval.of(good[1], n_good),
        good_to_review=RateWithInterval.of(good[2], n_good), sources=tuple(sorted(sources.items())),
    )


def cell_truth(
    cell: CellRecord, inspections: Sequence[InspectionRecord], truths: Mapping[Key, TruthRecord]
) -> bool | None:
    """True: defective; False: good at every station it reached; None: some inspection has no truth."""
    known = [truths.get((r.run_id, r.sequence, r.station)) for r in inspections]
    if any(t is not None and t.defective for t in known):
        return True
    if known and all(t is not None for t in known):
        return False
    return None


def truth_rates(
    inspections: Sequence[InspectionRecord], cells: Sequence[CellRecord], truths: Iterable[TruthRecord],
    stations: Sequence[str],
) -> tuple[tuple[TruthRates, ...], TruthRates]:
    """Per station (line order) and for the line (per cell, by its disposition) against the best truth."""
    best = best_truths(truths)
    per_station: dict[str, list[tuple[bool, int]]] = {s: [] for s in stations}
    sources: dict[str, Counter[str]] = {s: Counter() for s in stations}
    inspected: Counter[str] = Counter()
    by_cell: dict[tuple[int, int], list[InspectionRecord]] = {}
    for r in inspections:
        by_cell.setdefault((r.run_id, r.sequence), []).append(r)
        per_station.setdefault(r.station, [])
        sources.setdefault(r.station, Counter())
        inspected[r.station] += 1
        truth = best.get((r.run_id, r.sequence, r.station))
        if truth is not None:
            per_station[r.station].append((truth.defective, _call(r.verdict)))
            sources[r.station][truth.source.value] += 1
    station_rates = tuple(_rates(s, inspected[s], pairs, sources[s]) for s, pairs in per_station.items())
    line_pairs: list[tuple[bool, int]] = []
    line_sources: Counter[str] = Counter()
    for cell in cells:
        mine = by_cell.get((cell.run_id, cell.sequence), [])
        defective = cell_truth(cell, mine, best)
        if defective is not None:
            line_pairs.append((defective, _call(cell.disposition)))
            line_sources.update({best[(r.run_id, r.sequence, r.station)].source.value for r in mine
                                 if (r.run_id, r.sequence, r.station) in best})
    return station_rates, _rates("line", len(cells), line_pairs, line_sources)


def sampled_estimate(
    inspections: Sequence[InspectionRecord], cells: Sequence[CellRecord], truths: Iterable[TruthRecord]
) -> SampledEstimate:
    """The line's escape and overkill from its audit sample and reviews alone (synthetic truth left out).

    Intervals: the Wilson interval of each sampled share, carried through the estimate at its ends (the
    two shares move the rates the same way), so the range is approximate, not an exact 95% interval.
    """
    best = best_truths(truths, exclude=(TruthSource.SYNTHETIC,))
    by_cell: dict[tuple[int, int], list[InspectionRecord]] = {}
    for r in inspections:
        by_cell.setdefault((r.run_id, r.sequence), []).append(r)
    shipped = [c for c in cells if c.disposition is Disposition.OK]
    rejected = [c for c in cells if c.disposition is not Disposition.OK]
    audited = [t for c in shipped if c.audit and (t := cell_truth(c, by_cell.get((c.run_id, c.sequence), []), best))
               is not None]
    reviewed = []
    for c in rejected:
        truth = best.get((c.run_id, c.sequence, c.failed_station or ""))
        if truth is not None:
            reviewed.append(truth.defective)
    outgoing = RateWithInterval.of(sum(audited), len(audited))
    false_share = RateWithInterval.of(sum(not d for d in reviewed), len(reviewed))
    n_ok, n_rej = len(shipped), len(rejected)

    def rates(p: float, q: float) -> tuple[float | None, float | None]:
        escapes, false_calls = n_ok * p, n_rej * q
        defective, good = escapes + (n_rej - false_calls), false_calls + (n_ok - escapes)
        return (escapes / defective if defective else None, false_calls / good if good else None)

    escape_rate = overkill_rate = None
    if audited and reviewed:
        mid, low, high = (rates(outgoing.rate, false_share.rate), rates(outgoing.low, false_share.low),
                          rates(outgoing.high, false_share.high))
        if mid[0] is not None and low[0] is not None and high[0] is not None:
            escape_rate = (mid[0], low[0], high[0])
        if mid[1] is not None and low[1] is not None and high[1] is not None:
            overkill_rate = (mid[1], low[1], high[1])
    escapes = (n_ok * outgoing.rate, n_ok * outgoing.low, n_ok * outgoing.high) if audited else (
        float("nan"), 0.0, float(n_ok))
    return SampledEstimate(
        shipped=n_ok, audited=len(audited), found_defective=sum(audited), outgoing_defective=outgoing,
        rejected=n_rej, reviewed=len(reviewed), found_good=sum(not d for d in reviewed),
        false_call_share=false_share, escapes=escapes, escape_rate=escape_rate, overkill_rate=overkill_rate,
    )
