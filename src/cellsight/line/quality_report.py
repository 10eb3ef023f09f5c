"""The line quality report: a rich terminal summary, one self-contained HTML page, and JSON.

The HTML embeds plotly.js once (`cellsight.reporting.page`), so it opens on an offline line PC.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from rich.console import Console
from rich.table import Table

from cellsight.i18n import N_, Localizer, localizer
from cellsight.line.quality import Genealogy, LineQuality, PChart, genealogy_json
from cellsight.reporting.page import PAGE_CSS, escape, figure_html, plotly_script_tag
from cellsight.types import Verdict

_CSS = PAGE_CSS + """
.note{color:#5a6473;font-size:.9em}
.plots{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
"""
_WIDE = 1150
_DEFECT, _REASON, _BAD, _RUN = "#2e6fba", "#d97706", "#b42318", "#f59e0b"
_KINDS = (N_("defect"), N_("reason"))  # a Pareto bar's kind, shown translated


def _t(loc: Localizer | None) -> Localizer:
    return loc or localizer()


def _pct(value: float | None, digits: int = 1, loc: Localizer | None = None) -> str:
    return _t(loc).percent(value if value is None or math.isfinite(value) else None, digits)


def _interval(interval: tuple[float, float] | None, loc: Localizer | None = None) -> str:
    return "" if interval is None else f"{_pct(interval[0], loc=loc)}–{_pct(interval[1], loc=loc)}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def _with_interval(
    value: float | None, interval: tuple[float, float] | None, empty: str, loc: Localizer | None = None
) -> str:
    return empty if value is None else f"{_pct(value, loc=loc)} ({_interval(interval, loc)})"


def _signals(quality: LineQuality, loc: Localizer | None = None) -> list[tuple[str, int, int, str, str, str]]:
    _ = _t(loc).gettext
    chart = quality.pchart
    rows = []
    for s in chart.out_of_control:
        why = []
        if s.beyond_limits:
            why.append(_("above UCL") if s.p > s.ucl else _("below LCL"))
        if s.in_run:
            above = chart.centre is not None and s.p > chart.centre
            text = _("run of ≥{n} above centre") if above else _("run of ≥{n} below centre")
            why.append(text.format(n=chart.run_length))
        limits = f"{_pct(s.lcl, loc=loc)}–{_pct(s.ucl, loc=loc)}"
        rows.append((s.label, s.n, s.rejects, _pct(s.p, loc=loc), limits, ", ".join(why)))
    return rows


def _chart_basis(chart: PChart, loc: Localizer | None = None) -> str:
    _ = _t(loc).gettext
    if chart.basis == "time":
        return _("time buckets of {seconds} s").format(seconds=f"{chart.bucket_seconds or 0:g}")
    return _("subgroups of {n} consecutive cells").format(n=chart.subgroup_size)


# ----------------------------------------------------------------------------------------------- terminal
def print_quality(quality: LineQuality, console: Console, pareto_top: int = 5, loc: Localizer | None = None) -> None:
    """The line's figures on a terminal: stations, RTY, final yield, top of the Pareto, p-chart signals."""
    _ = _t(loc).gettext
    undefined = _("undefined (no cells)")
    table = Table(title=_("First-pass yield per station (Wilson 95%)"), title_justify="left")
    table.add_column(_("Station"))
    for name in (_("Inspected"), _("Passed"), "NG", "ERROR", _("Re-insp."), _("FPY (95% CI)"), _("Mean latency")):
        table.add_column(name, justify="right")
    for s in quality.stations:
        table.add_row(
            s.station,
            str(s.inspected),
            str(s.passed),
            str(s.ng),
            str(s.error),
            str(s.reinspections),
            _with_interval(s.fpy, s.interval, undefined, loc=loc),
            _ms(s.mean_latency_ms),
        )
    console.print(table)
    final = quality.final
    console.print(_("Rolled throughput yield: {rty}  (product of station FPYs)").format(rty=_pct(quality.rty, loc=loc)))
    console.print(_("Final yield: {value}  {ok} OK / {cells} cells, {ng} NG, {review} REVIEW").format(
        value=_with_interval(final.final_yield, final.interval, undefined, loc=loc), ok=final.ok, cells=final.cells,
        ng=final.ng, review=final.review))
    if quality.pareto:
        pareto = Table(title=_("Defect Pareto (top {top} of {n})").format(top=pareto_top, n=len(quality.pareto)),
                       title_justify="left")
        for index, name in enumerate((_("Category"), _("Kind"), _("Count"), _("Share"), _("Cumulative"))):
            pareto.add_column(name, justify="left" if index < 2 else "right")
        for item in quality.pareto[:pareto_top]:
            pareto.add_row(item.category, _(item.kind), str(item.count), _pct(item.share, loc=loc),
                           _pct(item.cumulative_share, loc=loc))
        console.print(pareto)
    else:
        console.print(_("Defect Pareto: no NG or ERROR inspections."))
    chart = quality.pchart
    if chart.centre is None:
        console.print(_("p-chart: no finished cells."))
        return
    head = _("p-chart of the reject rate: p̄ = {centre}, {n} {basis}").format(
        centre=_pct(chart.centre, 2, loc=loc), n=len(chart.subgroups), basis=_chart_basis(chart, loc))
    signals = _signals(quality, loc)
    if not signals:
        console.print(_("{head}: in control.").format(head=head))
        return
    out = Table(title=_("{head}: {n} out of control").format(head=head, n=len(signals)), title_justify="left")
    for index, name in enumerate((_("Subgroup"), "n", _("Rejects"), "p", "LCL–UCL", _("Signal"))):
        out.add_column(name, justify="right" if index in (1, 2, 3) else "left")
    for label, n, rejects, p, limits, why in signals:
        out.add_row(label, str(n), str(rejects), p, limits, why, style="red")
    console.print(out)


def print_genealogy(genealogy: Genealogy, console: Console, loc: Localizer | None = None) -> None:
    """One cell's history on a terminal."""
    _ = _t(loc).gettext
    if not genealogy.found:
        console.print(_("No records for cell {cell}.").format(cell=repr(genealogy.cell_id)))
        return
    table = Table(title=_("Genealogy of {cell}").format(cell=genealogy.cell_id), title_justify="left")
    for name in (_("Inspected at"), _("Run"), _("Seq"), _("Station"), _("Verdict"), _("Score"), _("Defect / reason"),
                 _("Model")):
        table.add_column(name)
    for r in genealogy.inspections:
        why = r.reason.value if r.reason is not None else (r.defect_class or "")
        table.add_row(
            r.inspected_at.isoformat(sep=" ", timespec="seconds"),
            str(r.run_id),
            str(r.sequence),
            r.station,
            r.verdict.value,
            _("n/a") if not math.isfinite(r.score) else f"{r.score:.3f}",
            why,
            r.model_version,
            style=None if r.verdict is Verdict.OK else "red",
        )
    console.print(table)
    for c in genealogy.dispositions:
        where = " " + _("at {station}").format(station=c.failed_station) if c.failed_station else ""
        reason = f" ({c.reason.value})" if c.reason is not None else ""
        run = _("run {number}").format(number=c.run_id)
        console.print(f"{run} #{c.sequence}: [bold]{c.disposition.value}[/bold]{where}{reason}")


# ------------------------------------------------------------------------------------------------- charts
def _note(text: str) -> str:
    return f"<div><p class='note'>{escape(text)}</p></div>"


def _fpy_figure(quality: LineQuality, loc: Localizer | None = None) -> str:
    _ = _t(loc).gettext
    defined = [s for s in quality.stations if s.fpy is not None and s.interval is not None]
    if not defined:
        return _note(_("No station has inspected a cell: FPY undefined."))
    fpy = [s.fpy or 0.0 for s in defined]
    low = [f - s.interval[0] for f, s in zip(fpy, defined, strict=True) if s.interval]
    high = [s.interval[1] - f for f, s in zip(fpy, defined, strict=True) if s.interval]
    fig = go.Figure(
        go.Bar(
            x=[s.station for s in defined],
            y=fpy,
            marker_color=_DEFECT,
            error_y={"type": "data", "symmetric": False, "array": high, "arrayminus": low, "color": "#1d2430"},
            text=[_pct(f, loc=loc) for f in fpy],
            textposition="inside",
            customdata=[[s.inspected, s.passed, _interval(s.interval, loc=loc)] for s in defined],
            hovertemplate="%{x}<br>FPY %{y:.1%} (95%: %{customdata[2]})<br>%{customdata[1]} / %{customdata[0]}"
            "<extra></extra>",
        )
    )
    if quality.rty is not None:
        fig.add_hline(
            y=quality.rty,
            line_dash="dash",
            line_color=_BAD,
            annotation_text=f"RTY {_pct(quality.rty, loc=loc)}",
            annotation_position="bottom left",
        )
    fig.update_layout(title=_("FPY per station, Wilson 95%"), showlegend=False)
    fig.update_yaxes(range=[0, 1.05], tickformat=".0%", title="FPY")
    return figure_html(fig)


def _pareto_figure(quality: LineQuality, loc: Localizer | None = None) -> str:
    _ = _t(loc).gettext
    items = quality.pareto
    if not items:
        return _note(_("No NG or ERROR inspections: nothing to rank."))
    names = [i.category for i in items]
    fig = go.Figure()
    fig.add_bar(
        x=names,
        y=[i.count for i in items],
        marker_color=[_DEFECT if i.kind == "defect" else _REASON for i in items],
        customdata=[[_(i.kind), ", ".join(f"{s}: {n}" for s, n in i.by_station)] for i in items],
        hovertemplate="%{x} (%{customdata[0]})<br>%{y}<br>%{customdata[1]}<extra></extra>",
        name=_("count"),
    )
    fig.add_scatter(
        x=names,
        y=[100 * i.cumulative_share for i in items],
        yaxis="y2",
        mode="lines+markers",
        line_color=_BAD,
        name=_("cumulative %"),
        hovertemplate="%{y:.1f}%<extra></extra>",
    )
    fig.add_hline(y=80, yref="y2", line_dash="dot", line_color="#98a2b3")
    fig.update_layout(
        title=_("Defect Pareto (blue: model's defect class, orange: line's ERROR/REVIEW reason)"),
        yaxis={"title": _("non-OK inspections"), "rangemode": "tozero"},
        yaxis2={
            "title": _("cumulative %"),
            "overlaying": "y",
            "side": "right",
            "range": [0, 105],
            "tickvals": [0, 20, 40, 60, 80, 100],
            "ticksuffix": "%",
            "showgrid": False,
        },
        legend={"orientation": "h", "y": -0.25},
        bargap=0.3,
    )
    return figure_html(fig, width=_WIDE, height=460)


def _pchart_figure(quality: LineQuality, loc: Localizer | None = None) -> str:
    _ = _t(loc).gettext
    chart = quality.pchart
    if chart.centre is None:
        return _note(_("No finished cells: no p-chart."))
    groups = chart.subgroups
    x = [s.index for s in groups]
    labels = [s.label for s in groups]
    custom = [[s.label, s.rejects, s.n] for s in groups]
    fig = go.Figure()
    fig.add_scatter(
        x=x, y=[s.ucl for s in groups], mode="lines", line={"shape": "hvh", "dash": "dash", "color": _BAD}, name="UCL"
    )
    fig.add_scatter(
        x=x, y=[s.lcl for s in groups], mode="lines", line={"shape": "hvh", "dash": "dash", "color": _BAD}, name="LCL"
    )
    fig.add_hline(y=chart.centre, line_color="#067647", annotation_text=f"p̄ {_pct(chart.centre, 2, loc=loc)}")
    fig.add_scatter(
        x=x,
        y=[s.p for s in groups],
        mode="lines+markers",
        line_color=_DEFECT,
        marker={"size": 6},
        customdata=custom,
        hovertemplate="%{customdata[0]}<br>p = %{y:.2%} (%{customdata[1]} / %{customdata[2]})<extra></extra>",
        name=_("reject rate"),
    )
    for name, pick, color, symbol in [
        (_("run of ≥{n}").format(n=chart.run_length), lambda s: s.in_run and not s.beyond_limits, _RUN, "diamond"),
        (_("beyond limits"), lambda s: s.beyond_limits, _BAD, "x"),
    ]:
        flagged = [s for s in groups if pick(s)]
        if flagged:
            fig.add_scatter(
                x=[s.index for s in flagged],
                y=[s.p for s in flagged],
                mode="markers",
                marker={"color": color, "size": 12, "symbol": symbol, "line": {"width": 1, "color": color}},
                customdata=[[s.label] for s in flagged],
                hovertemplate="%{customdata[0]}: %{y:.2%}<extra>" + escape(name) + "</extra>",
                name=name,
            )
    step = max(1, len(groups) // 12)
    fig.update_layout(
        title=_("p-chart of the reject rate (NG or REVIEW), {basis}").format(basis=_chart_basis(chart, loc)),
        legend={"orientation": "h", "y": -0.3},
        xaxis={"tickmode": "array", "tickvals": x[::step], "ticktext": labels[::step], "title": _("subgroup")},
    )
    fig.update_yaxes(tickformat=".0%", title=_("reject rate"), rangemode="tozero")
    return figure_html(fig, width=_WIDE, height=480)


# ------------------------------------------------------------------------------------------------- tables
def _station_table(quality: LineQuality, loc: Localizer | None = None) -> str:
    _ = _t(loc).gettext
    head = "".join(
        f"<th>{escape(h)}</th>"
        for h in (_("Station"), _("Inspected"), _("Passed"), "NG", "ERROR", _("Re-insp."), "FPY", _("95% CI"),
                  _("Mean / p95 latency"))
    )
    rows = []
    for s in quality.stations:
        fpy = escape(_("undefined (no cells)")) if s.fpy is None else _pct(s.fpy, loc=loc)
        latency = f"{_ms(s.mean_latency_ms)} / {_ms(s.p95_latency_ms)}"
        nums = (s.inspected, s.passed, s.ng, s.error, s.reinspections)
        rows.append(
            f"<tr><td>{escape(s.station)}</td>"
            + "".join(f"<td class='num'>{v}</td>" for v in nums)
            + f"<td class='num'>{fpy}</td><td class='num'>{_interval(s.interval, loc=loc)}</td>"
            f"<td class='num'>{latency}</td></tr>"
        )
    final = quality.final
    counts = _("{ok} OK of {cells} cells · {ng} NG · {review} REVIEW").format(
        ok=final.ok, cells=final.cells, ng=final.ng, review=final.review)
    summary = (
        "<tr><th>" + escape(_("Rolled throughput yield")) + f"</th><td class='num'>{_pct(quality.rty, loc=loc)}</td>"
        "<td class='note'>" + escape(_("product of the station FPYs: first time through every station")) + "</td></tr>"
        "<tr><th>" + escape(_("Final yield")) + "</th><td class='num'>"
        + escape(_with_interval(final.final_yield, final.interval, _("undefined"), loc=loc))
        + f"</td><td class='note'>{escape(counts)}</td></tr>"
    )
    return f"<table><tr>{head}</tr>{''.join(rows)}</table><table>{summary}</table>"


def _signals_table(quality: LineQuality, loc: Localizer | None = None) -> str:
    _ = _t(loc).gettext
    signals = _signals(quality, loc)
    if quality.pchart.centre is None:
        return ""
    if not signals:
        return "<p class='note'>" + escape(_("No subgroup out of control.")) + "</p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in (_("Subgroup"), "n", _("Rejects"), "p", "LCL–UCL", _("Signal")))
    rows = "".join(
        f"<tr><td>{escape(label)}</td><td class='num'>{n}</td><td class='num'>{d}</td><td class='num bad'>{p}</td>"
        f"<td class='num'>{limits}</td><td>{escape(why)}</td></tr>"
        for label, n, d, p, limits, why in signals
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


def _genealogy_html(genealogy: Genealogy, loc: Localizer | None = None) -> str:
    _ = _t(loc).gettext
    title = "<h2>" + escape(_("Genealogy of {cell}").format(cell=genealogy.cell_id)) + "</h2>"
    if not genealogy.found:
        return title + "<p class='note'>" + escape(_("No records for this cell ID.")) + "</p>"
    head = "".join(
        f"<th>{escape(h)}</th>"
        for h in (_("Inspected at"), _("Run"), _("Seq"), _("Station"), _("Verdict"), _("Score"), _("Defect"),
                  _("Reason"), _("Model"), _("Latency"))
    )
    rows = []
    for r in genealogy.inspections:
        css = "ok" if r.verdict is Verdict.OK else "bad"
        score = _("n/a") if not math.isfinite(r.score) else f"{r.score:.3f}"
        cells = (
            r.inspected_at.isoformat(sep=" ", timespec="seconds"),
            r.run_id,
            r.sequence,
            r.station,
            r.verdict.value,
            score,
            r.defect_class or "",
            r.reason.value if r.reason else "",
            f"{r.model_version} ({r.model_hash[:8]})",
            _ms(r.latency_ms),
        )
        tds = (f"<td class='{css if i == 4 else ''}'>{escape(v)}</td>" for i, v in enumerate(cells))
        rows.append("<tr>" + "".join(tds) + "</tr>")
    fates = "".join(
        f"<tr><td>{c.run_id}</td><td>{c.sequence}</td>"
        f"<td class='{'ok' if c.disposition.value == 'OK' else 'bad'}'>{escape(c.disposition.value)}</td>"
        f"<td>{escape(c.failed_station or '')}</td><td>{escape(c.reason.value if c.reason else '')}</td>"
        f"<td>{escape(c.finished_at.isoformat(sep=' ', timespec='seconds'))}</td></tr>"
        for c in genealogy.dispositions
    )
    fate_head = "".join(f"<th>{escape(h)}</th>" for h in (_("Run"), _("Seq"), _("Disposition"), _("Failed station"),
                                                           _("Reason"), _("Finished")))
    not_finished = "<p class='note'>" + escape(_("Not finished.")) + "</p>"
    fate_table = f"<table><tr>{fate_head}</tr>{fates}</table>" if fates else not_finished
    dispositions = escape(_("Dispositions"))
    return f"{title}<table><tr>{head}</tr>{''.join(rows)}</table><h3>{dispositions}</h3>{fate_table}"


# ----------------------------------------------------------------------------------------------- outputs
def render_quality_html(
    quality: LineQuality, genealogy: Genealogy | None = None, title: str = "cellsight line quality",
    extra_html: str = "", loc: Localizer | None = None,
) -> str:
    """The whole page as a string: station table, FPY bars, Pareto, p-chart, optional genealogy."""
    loc = _t(loc)
    _ = loc.gettext
    stations = " → ".join(s.station for s in quality.stations)
    subtitle = _("{inspections} inspections · {cells} finished cells · line: {stations}").format(
        inspections=quality.inspections, cells=quality.final.cells, stations=stations)
    control = _(
        "p-chart with 3-sigma limits per subgroup size; signals: a point beyond a limit (Western Electric rule 1) "
        "and {n} points in a row on one side of the centre line (run rule)."
    ).format(n=quality.pchart.run_length)
    return (
        f"<!DOCTYPE html><html lang='{escape(loc.html_lang)}'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_CSS}</style>{plotly_script_tag()}</head><body>"
        f"<h1>{escape(title)}</h1><p class='sub'>{escape(subtitle)}</p>"
        "<h2>" + escape(_("Yield")) + "</h2><p class='note'>"
        + escape(_("FPY: cells OK at their first inspection at a station / cells that entered it (ERROR is not a "
                   "pass; re-inspections do not count)."))
        + f"</p><div class='plots'>{_fpy_figure(quality, loc)}<div>{_station_table(quality, loc)}</div></div>"
        + "<h2>" + escape(_("Defect Pareto")) + f"</h2>{_pareto_figure(quality, loc)}"
        + "<h2>" + escape(_("Reject rate control chart")) + f"</h2><p class='note'>{escape(control)}</p>"
        f"{_pchart_figure(quality, loc)}{_signals_table(quality, loc)}"
        f"{extra_html}{_genealogy_html(genealogy, loc) if genealogy is not None else ''}</body></html>"
    )


def write_quality_html(
    quality: LineQuality, path: str | Path, genealogy: Genealogy | None = None, title: str = "cellsight line quality",
    extra_html: str = "", loc: Localizer | None = None,
) -> Path:
    """One self-contained HTML file (plotly.js embedded) that opens offline; `extra_html` is already escaped."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_quality_html(quality, genealogy, title, extra_html, loc), encoding="utf-8")
    return target


def quality_json(
    quality: LineQuality, genealogy: Genealogy | None = None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The same figures as plain JSON types (for the API and `--json`), plus `extra` sections."""
    data = quality.to_json_dict() | (extra or {})
    if genealogy is not None:
        data["genealogy"] = genealogy_json(genealogy)
    return data


def write_quality_json(
    quality: LineQuality, path: str | Path, genealogy: Genealogy | None = None, extra: dict[str, Any] | None = None
) -> Path:
    """Strict JSON (no NaN tokens), so any consumer can parse it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(quality_json(quality, genealogy, extra), indent=2, allow_nan=False, ensure_ascii=False)
    target.write_text(text + "\n", encoding="utf-8")
    return target
