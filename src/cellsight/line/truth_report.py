"""Truth, cost of quality and energy for one run: gathered from the store (`run_truth_costs`), printed,
rendered as an HTML section and as JSON. The CLI's `line report` and the dashboard's API both use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from rich.console import Console
from rich.table import Table

from cellsight.i18n import Localizer, localizer
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


def _cost_rows(loc: Localizer, currency: str) -> tuple[tuple[str, Callable[[CostFigures], str]], ...]:
    """The cost table's rows: (label, how one period's figures read), in the locale's numbers."""
    _ = loc.gettext
    money = lambda value: loc.money(value, currency)  # noqa: E731
    return (
        (_("cells (with truth)"), lambda r: f"{loc.number(r.cells)} ({loc.number(r.with_truth)})"),
        (_("defects caught early"), lambda r: loc.number(r.caught)),
        (_("scrap value avoided"), lambda r: money(r.scrap_value_avoided)),
        (_("energy avoided"), lambda r: f"{loc.number(r.energy_avoided_kwh, 1)} kWh"),
        (_("CO2e avoided"), lambda r: f"{loc.number(r.co2e_avoided_kg, 1)} kg"),
        (_("escapes: cost"), lambda r: f"{loc.number(r.escapes)}: {money(r.escape_cost)}"),
        (_("false calls: cost"), lambda r: f"{loc.number(r.false_calls)}: {money(r.false_call_cost)}"),
        (_("reviews: cost"), lambda r: f"{loc.number(r.reviews)}: {money(r.review_cost)}"),
        (_("cost of quality"), lambda r: money(r.cost_of_quality)),
        (_("net saving"), lambda r: money(r.net_saving)),
    )


def period_label(period: str, loc: Localizer) -> str:
    """"run 3", "2026-12-02", "2026-12-02 early" in the locale (run and shift words translated)."""
    _ = loc.gettext
    if period.startswith("run "):
        return _("run {number}").format(number=period.removeprefix("run "))
    day, _sep, shift = period.partition(" ")
    shown = loc.date(date.fromisoformat(day))
    return shown + " " + _(shift) if shift else shown


def rate_text(rate: RateWithInterval, loc: Localizer) -> str:
    """E.g. "1.2% 3/250 [0.4–3.5%]"; "n/a" without truth."""
    if not rate.n:
        return loc.gettext("n/a")
    return (f"{loc.percent(rate.rate)} {loc.number(rate.count)}/{loc.number(rate.n)} "
            f"[{loc.percent(rate.low)}–{loc.percent(rate.high)}]")


def naming_sentence(naming: NamingAgainstTruth, loc: Localizer | None = None) -> str:
    """Where the NG calls' names, and "unknown", come from."""
    n, _ = naming, (loc or localizer()).gettext
    return _(
        "names on {ng} NG calls with truth: {right} right, {wrong} wrong, {unknown_defective} unknown on real "
        "defects; {false_calls} were false calls ({unknown_good} named unknown): {unknown_good} of {unknown} "
        "'unknown' are good cells"
    ).format(ng=n.ng_with_truth, right=n.named_right, wrong=n.named_wrong, unknown_defective=n.unknown_on_defective,
             false_calls=n.named_on_good + n.unknown_on_good, unknown_good=n.unknown_on_good, unknown=n.unknown)


def _triple(values: tuple[float, float, float] | None, loc: Localizer) -> str:
    if values is None or not math.isfinite(values[0]):
        return loc.gettext("n/a")
    return f"{loc.percent(values[0], 2)} (≈95% {loc.percent(values[1], 2)}–{loc.percent(values[2], 2)})"


def sampled_sentence(s: SampledEstimate, loc: Localizer) -> str:
    _ = loc.gettext
    return _(
        "From samples alone (what a real line measures): the audit of {audited} of {shipped} shipped cells found "
        "{found_defective} defective ({outgoing}); reviews of {reviewed} of {rejected} rejected cells found "
        "{found_good} good. Estimated escape {escape}, overkill {overkill}."
    ).format(audited=s.audited, shipped=s.shipped, found_defective=s.found_defective,
             outgoing=rate_text(s.outgoing_defective, loc), reviewed=s.reviewed, rejected=s.rejected,
             found_good=s.found_good, escape=_triple(s.escape_rate, loc), overkill=_triple(s.overkill_rate, loc))


def _scope(scope: str, loc: Localizer) -> str:
    return loc.gettext("line") if scope == "line" else scope


# ----------------------------------------------------------------------------------------------- terminal
def print_truth_costs(report: TruthCosts, console: Console, loc: Localizer | None = None) -> None:
    """Escape and overkill against truth per station and for the line, the sampled view, and the costs."""
    loc = loc or localizer()
    _ = loc.gettext
    table = Table(title=_("Against truth: escape = defective passed, overkill = good NG (Wilson 95%)"))
    for index, column in enumerate((_("scope"), _("truth"), _("escape"), _("overkill"), _("good to review"))):
        table.add_column(column, justify="right" if index else "left")
    for rates in (*report.stations, report.line):
        table.add_row(_scope(rates.scope, loc), f"{rates.with_truth}/{rates.inspected}", rate_text(rates.escape, loc),
                      rate_text(rates.overkill, loc), rate_text(rates.good_to_review, loc))
    console.print(table)
    console.print(naming_sentence(report.naming, loc))
    c = report.line.confusion
    console.print(_("line confusion (truth x call OK/NG/REVIEW): good {good}, defective {defective}").format(
        good=list(c.good), defective=list(c.defective)))
    console.print(sampled_sentence(report.sampled, loc))
    if report.run_costs is None or report.currency is None:
        console.print(_("no cost model in the line configuration (add costs: for cost of quality and energy)"))
        return
    periods = (report.run_costs, *report.per_day, *report.per_shift)
    costs = Table(title=_("Cost of quality and energy ({currency})").format(currency=report.currency))
    costs.add_column("")
    for row in periods:
        costs.add_column(period_label(row.period, loc), justify="right")
    for label, value in _cost_rows(loc, report.currency):
        costs.add_row(label, *(value(row) for row in periods))
    console.print(costs)


# ----------------------------------------------------------------------------------------------- HTML
def truth_costs_html(report: TruthCosts, loc: Localizer | None = None) -> str:
    """The report's truth and cost section, every value escaped (for `render_quality_html`'s extra section)."""
    loc = loc or localizer()
    _ = loc.gettext
    rows = "".join(
        f"<tr><td>{escape(_scope(r.scope, loc))}</td><td class='num'>{r.with_truth}/{r.inspected}</td>"
        + "".join(f"<td class='num'>{escape(rate_text(x, loc))}</td>" for x in (r.escape, r.overkill, r.good_to_review))
        + "</tr>"
        for r in (*report.stations, report.line)
    )
    c = report.line.confusion
    matrix = (
        "<table><tr><th>" + escape(_("truth / call")) + "</th>" + "".join(f"<th>{x}</th>" for x in CALLS) + "</tr>"
        + "".join(f"<tr><th>{escape(name)}</th>" + "".join(f"<td class='num'>{v}</td>" for v in values) + "</tr>"
                  for name, values in ((_("good"), c.good), (_("defective"), c.defective)))
        + "</table>"
    )
    heads = "".join(f"<th>{escape(h)}</th>" for h in (_("scope"), _("truth"), _("escape"), _("overkill"),
                                                     _("good to review")))
    section = (
        "<h2>" + escape(_("Against truth")) + "</h2><p class='note'>"
        + escape(_("Escape: defective cells passed / defective cells; overkill: good cells rejected NG / good "
                   "cells; Wilson 95% intervals."))
        + f"</p><table><tr>{heads}</tr>{rows}</table><h3>" + escape(_("Line confusion matrix (cells)"))
        + f"</h3>{matrix}"
        f"<p class='note'>{escape(sampled_sentence(report.sampled, loc))}</p>"
        f"<p class='note'>{escape(naming_sentence(report.naming, loc))}</p>"
    )
    if report.run_costs is None or report.currency is None:
        return section
    periods = (report.run_costs, *report.per_day, *report.per_shift)
    head = "<th></th>" + "".join(f"<th>{escape(period_label(r.period, loc))}</th>" for r in periods)
    body = "".join(
        f"<tr><th>{escape(label)}</th>" + "".join(f"<td class='num'>{escape(value(r))}</td>" for r in periods) + "</tr>"
        for label, value in _cost_rows(loc, report.currency)
    )
    title = _("Cost of quality and energy ({currency})").format(currency=report.currency)
    return section + f"<h2>{escape(title)}</h2><table><tr>{head}</tr>{body}</table>"


# ----------------------------------------------------------------------------------------------- display
def truth_costs_display(report: TruthCosts, loc: Localizer | None = None) -> dict[str, Any]:
    """The panel as text in one locale (tables of strings): the dashboard shows it as is, with textContent."""
    loc = loc or localizer()
    _ = loc.gettext
    truth_head = [_("scope"), _("truth"), _("escape"), _("overkill"), _("good to review")]
    truth_rows = [
        [_scope(r.scope, loc), f"{loc.number(r.with_truth)}/{loc.number(r.inspected)}", rate_text(r.escape, loc),
         rate_text(r.overkill, loc), rate_text(r.good_to_review, loc)]
        for r in (*report.stations, report.line)
    ]
    c = report.line.confusion
    display: dict[str, Any] = {
        "locale": loc.locale,
        "run": _("run {number}").format(number=report.run_id),
        "title": _("Against truth: escape = defective passed, overkill = good NG (Wilson 95%)"),
        "truth": {"head": truth_head, "rows": truth_rows},
        "confusion_title": _("Line confusion matrix (cells)"),
        "confusion": {"head": [_("truth / call"), *CALLS],
                      "rows": [[_("good"), *map(loc.number, c.good)], [_("defective"), *map(loc.number, c.defective)]]},
        "sampled": sampled_sentence(report.sampled, loc),
        "naming": naming_sentence(report.naming, loc),
        "costs": None,
    }
    if report.run_costs is not None and report.currency is not None:
        periods = (report.run_costs, *report.per_day, *report.per_shift)
        display["costs"] = {
            "title": _("Cost of quality and energy ({currency})").format(currency=report.currency),
            "head": ["", *(period_label(p.period, loc) for p in periods)],
            "rows": [[label, *(value(p) for p in periods)] for label, value in _cost_rows(loc, report.currency)],
        }
    else:
        display["costs_missing"] = _(
            "no cost model in the line configuration (add costs: for cost of quality and energy)")
    return display
