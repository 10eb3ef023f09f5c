"""Truth, cost of quality and energy for one run: gathered from the store (`run_truth_costs`), printed,
rendered as an HTML section and as JSON. The CLI's `line report` and the dashboard's API both use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from cellsight.line.config import LineConfig
from cellsight.line.costs import CostFigures, cell_costs, costs_by_period
from cellsight.line.quality import _plain
from cellsight.line.truth import (
    CALLS,
    NamingAgainstTruth,
    SampledEstimate,
    TruthRates,
    naming_against_truth,
    sampled_estimate,
    truth_rates,
)
from cellsight.metrics.operating_point import RateWithInterval
from cellsight.reporting.page import escape
from cellsight.storage.store import TraceStore


@dataclass(frozen=True)
class TruthCosts:
    """Everything the truth and cost panel shows for one run."""

    run_id: int
    stations: tuple[TruthRates, ...]
    line: TruthRates
    sampled: SampledEstimate
    naming: NamingAgainstTruth
    currency: str | None  # None: the line has no cost model
    run_costs: CostFigures | None
    per_shift: tuple[CostFigures, ...]
    per_day: tuple[CostFigures, ...]

    def to_json_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.run_costs is not None:
            data["run_costs"] |= {"cost_of_quality": self.run_costs.cost_of_quality,
                                  "net_saving": self.run_costs.net_saving}
        for key, rows in (("per_shift", self.per_shift), ("per_day", self.per_day)):
            for item, row in zip(data[key], rows, strict=True):
                item |= {"cost_of_quality": row.cost_of_quality, "net_saving": row.net_saving}
        data["calls"] = list(CALLS)
        result: dict[str, Any] = _plain(data)
        return result


def run_truth_costs(store: TraceStore, config: LineConfig, run_id: int) -> TruthCosts:
    """Read one run's inspections, cells and truths and compute the panel's figures."""
    run = store.run(run_id)
    inspections, cells, truths = store.inspections(run_id), store.cells(run_id), store.truths(run_id)
    stations, line = truth_rates(inspections, cells, truths, run.stations)
    sampled = sampled_estimate(inspections, cells, truths)
    naming = naming_against_truth(inspections, truths)
    if config.costs is None:
        return TruthCosts(run_id, stations, line, sampled, naming, None, None, (), ())
    run_costs = cell_costs(f"run {run_id}", cells, inspections, truths, config.costs)
    per_day, per_shift = costs_by_period(cells, inspections, truths, config.costs, config.shifts, config.timezone)
    return TruthCosts(run_id, stations, line, sampled, naming, config.costs.currency, run_costs, per_shift, per_day)


_COST_ROWS: tuple[tuple[str, Callable[[CostFigures], str]], ...] = (
    ("cells (with truth)", lambda r: f"{r.cells} ({r.with_truth})"),
    ("defects caught early", lambda r: f"{r.caught}"),
    ("scrap value avoided", lambda r: f"{r.scrap_value_avoided:,.2f}"),
    ("energy avoided", lambda r: f"{r.energy_avoided_kwh:,.1f} kWh"),
    ("CO2e avoided", lambda r: f"{r.co2e_avoided_kg:,.1f} kg"),
    ("escapes: cost", lambda r: f"{r.escapes}: {r.escape_cost:,.2f}"),
    ("false calls: cost", lambda r: f"{r.false_calls}: {r.false_call_cost:,.2f}"),
    ("reviews: cost", lambda r: f"{r.reviews}: {r.review_cost:,.2f}"),
    ("cost of quality", lambda r: f"{r.cost_of_quality:,.2f}"),
    ("net saving", lambda r: f"{r.net_saving:,.2f}"),
)


# ----------------------------------------------------------------------------------------------- terminal
def _rate(rate: RateWithInterval) -> str:
    return rate.describe() if rate.n else "n/a (no truth)"


def _short(rate: RateWithInterval) -> str:
    """E.g. "1.2% 3/250 [0.4–3.5]": narrow enough for an 80-column terminal."""
    if not rate.n:
        return "n/a"
    return f"{100 * rate.rate:.1f}% {rate.count}/{rate.n} [{100 * rate.low:.1f}–{100 * rate.high:.1f}]"


def naming_sentence(naming: NamingAgainstTruth) -> str:
    """Where the NG calls' names, and "unknown", come from."""
    n = naming
    return (
        f"names on {n.ng_with_truth} NG calls with truth: {n.named_right} right, {n.named_wrong} wrong, "
        f"{n.unknown_on_defective} unknown on real defects; {n.named_on_good + n.unknown_on_good} were false calls "
        f"({n.unknown_on_good} named unknown): {n.unknown_on_good} of {n.unknown} 'unknown' are good cells"
    )


def _triple(values: tuple[float, float, float] | None) -> str:
    if values is None or not math.isfinite(values[0]):
        return "n/a"
    return f"{100 * values[0]:.2f}% (≈95% {100 * values[1]:.2f}–{100 * values[2]:.2f}%)"


def print_truth_costs(report: TruthCosts, console: Console) -> None:
    """Escape and overkill against truth per station and for the line, the sampled view, and the costs."""
    table = Table(title="Against truth: escape = defective passed, overkill = good NG (Wilson 95%)")
    for column in ("scope", "truth", "escape", "overkill", "good to review"):
        table.add_column(column, justify="left" if column == "scope" else "right")
    for rates in (*report.stations, report.line):
        table.add_row(rates.scope, f"{rates.with_truth}/{rates.inspected}", _short(rates.escape),
                      _short(rates.overkill), _short(rates.good_to_review))
    console.print(table)
    console.print(naming_sentence(report.naming))
    c = report.line.confusion
    console.print(f"line confusion (truth x call OK/NG/REVIEW): good {list(c.good)}, defective {list(c.defective)}")
    s = report.sampled
    console.print(
        f"from samples alone: audit of {s.audited} of {s.shipped} shipped cells found {s.found_defective} "
        f"defective ({_rate(s.outgoing_defective)}); reviews of {s.reviewed} of {s.rejected} rejected found "
        f"{s.found_good} good; estimated escape {_triple(s.escape_rate)}, overkill {_triple(s.overkill_rate)}"
    )
    if report.run_costs is None or report.currency is None:
        console.print("no cost model in the line configuration (add `costs:` for cost of quality and energy)")
        return
    periods = (report.run_costs, *report.per_day, *report.per_shift)
    costs = Table(title=f"Cost of quality and energy ({report.currency})")
    costs.add_column("")
    for row in periods:
        costs.add_column(row.period, justify="right")
    for label, value in _COST_ROWS:
        costs.add_row(label, *(value(row) for row in periods))
    console.print(costs)


# ----------------------------------------------------------------------------------------------- HTML
def _html_rate(rate: RateWithInterval) -> str:
    return escape(_rate(rate))


def truth_costs_html(report: TruthCosts) -> str:
    """The report's truth and cost section (escaped; for `render_quality_html`'s extra section)."""
    rows = "".join(
        f"<tr><td>{escape(r.scope)}</td><td class='num'>{r.with_truth}/{r.inspected}</td>"
        f"<td class='num'>{_html_rate(r.escape)}</td><td class='num'>{_html_rate(r.overkill)}</td>"
        f"<td class='num'>{_html_rate(r.good_to_review)}</td></tr>"
        for r in (*report.stations, report.line)
    )
    c = report.line.confusion
    matrix = (
        "<table><tr><th>Truth \\ call</th>" + "".join(f"<th>{x}</th>" for x in CALLS) + "</tr>"
        + "".join(f"<tr><th>{name}</th>" + "".join(f"<td class='num'>{v}</td>" for v in values) + "</tr>"
                  for name, values in (("good", c.good), ("defective", c.defective)))
        + "</table>"
    )
    s = report.sampled
    sampled = (
        f"<p class='note'>From samples alone (what a real line measures): audit of {s.audited} of {s.shipped} "
        f"shipped cells found {s.found_defective} defective ({_html_rate(s.outgoing_defective)}); reviews of "
        f"{s.reviewed} of {s.rejected} rejected cells found {s.found_good} good. Estimated escape "
        f"{escape(_triple(s.escape_rate))}, overkill {escape(_triple(s.overkill_rate))}.</p>"
    )
    section = (
        "<h2>Against truth</h2><p class='note'>Escape: defective cells passed / defective cells; overkill: good "
        "cells rejected NG / good cells; Wilson 95% intervals.</p>"
        "<table><tr><th>Scope</th><th>With truth</th><th>Escape</th><th>Overkill</th><th>Good to review</th></tr>"
        f"{rows}</table><h3>Line confusion matrix (cells)</h3>{matrix}{sampled}"
        f"<p class='note'>{escape(naming_sentence(report.naming))}</p>"
    )
    if report.run_costs is None or report.currency is None:
        return section
    periods = (report.run_costs, *report.per_day, *report.per_shift)
    head = "<th></th>" + "".join(f"<th>{escape(r.period)}</th>" for r in periods)
    body = "".join(
        f"<tr><th>{escape(label)}</th>" + "".join(f"<td class='num'>{escape(value(r))}</td>" for r in periods) + "</tr>"
        for label, value in _COST_ROWS
    )
    return (section + f"<h2>Cost of quality and energy ({escape(report.currency)})</h2>"
            f"<table><tr>{head}</tr>{body}</table>")
