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

from cellsight.line.quality import Genealogy, LineQuality, PChart, genealogy_json
from cellsight.reporting.page import PAGE_CSS, escape, figure_html, plotly_script_tag
from cellsight.types import Verdict

_CSS = PAGE_CSS + """
.note{color:#5a6473;font-size:.9em}
.plots{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
"""
_WIDE = 1150
_DEFECT, _REASON, _BAD, _RUN = "#2e6fba", "#d97706", "#b42318", "#f59e0b"


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f}%"


def _interval(interval: tuple[float, float] | None) -> str:
    return "" if interval is None else f"{_pct(interval[0])}–{_pct(interval[1])}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def _with_interval(value: float | None, interval: tuple[float, float] | None, empty: str) -> str:
    return empty if value is None else f"{_pct(value)} ({_interval(interval)})"


def _signals(quality: LineQuality) -> list[tuple[str, int, int, str, str, str]]:
    chart = quality.pchart
    rows = []
    for s in chart.out_of_control:
        why = []
        if s.beyond_limits:
            why.append("above UCL" if s.p > s.ucl else "below LCL")
        if s.in_run:
            side = "above" if chart.centre is not None and s.p > chart.centre else "below"
            why.append(f"run of ≥{chart.run_length} {side} centre")
        rows.append((s.label, s.n, s.rejects, _pct(s.p), f"{_pct(s.lcl)}–{_pct(s.ucl)}", ", ".join(why)))
    return rows


def _chart_basis(chart: PChart) -> str:
    if chart.basis == "time":
        return f"time buckets of {chart.bucket_seconds or 0:g} s"
    return f"subgroups of {chart.subgroup_size} consecutive cells"


# ----------------------------------------------------------------------------------------------- terminal
def print_quality(quality: LineQuality, console: Console, pareto_top: int = 5) -> None:
    """The line's figures on a terminal: stations, RTY, final yield, top of the Pareto, p-chart signals."""
    table = Table(title="First-pass yield per station (Wilson 95%)", title_justify="left")
    table.add_column("Station")
    for name in ("Inspected", "Passed", "NG", "ERROR", "Re-insp.", "FPY (95% CI)", "Mean latency"):
        table.add_column(name, justify="right")
    for s in quality.stations:
        table.add_row(
            s.station,
            str(s.inspected),
            str(s.passed),
            str(s.ng),
            str(s.error),
            str(s.reinspections),
            _with_interval(s.fpy, s.interval, "undefined (no cells)"),
            _ms(s.mean_latency_ms),
        )
    console.print(table)
    final = quality.final
    console.print(f"Rolled throughput yield: [bold]{_pct(quality.rty)}[/bold]  (product of station FPYs)")
    console.print(
        f"Final yield: [bold]{_with_interval(final.final_yield, final.interval, 'undefined (no cells)')}[/bold]"
        f"  {final.ok} OK / {final.cells} cells, {final.ng} NG, {final.review} REVIEW"
    )
    if quality.pareto:
        pareto = Table(title=f"Defect Pareto (top {pareto_top} of {len(quality.pareto)})", title_justify="left")
        for name in ("Category", "Kind", "Count", "Share", "Cumulative"):
            pareto.add_column(name, justify="left" if name in ("Category", "Kind") else "right")
        for item in quality.pareto[:pareto_top]:
            pareto.add_row(item.category, item.kind, str(item.count), _pct(item.share), _pct(item.cumulative_share))
        console.print(pareto)
    else:
        console.print("Defect Pareto: no NG or ERROR inspections.")
    chart = quality.pchart
    if chart.centre is None:
        console.print("p-chart: no finished cells.")
        return
    head = f"p-chart of the reject rate: p̄ = {_pct(chart.centre, 2)}, {len(chart.subgroups)} {_chart_basis(chart)}"
    signals = _signals(quality)
    if not signals:
        console.print(f"{head}: in control.")
        return
    out = Table(title=f"{head}: {len(signals)} out of control", title_justify="left")
    for name in ("Subgroup", "n", "Rejects", "p", "LCL–UCL", "Signal"):
        out.add_column(name, justify="right" if name in ("n", "Rejects", "p") else "left")
    for label, n, rejects, p, limits, why in signals:
        out.add_row(label, str(n), str(rejects), p, limits, why, style="red")
    console.print(out)


def print_genealogy(genealogy: Genealogy, console: Console) -> None:
    """One cell's history on a terminal."""
    if not genealogy.found:
        console.print(f"No records for cell {genealogy.cell_id!r}.")
        return
    table = Table(title=f"Genealogy of {genealogy.cell_id}", title_justify="left")
    for name in ("Inspected at", "Run", "Seq", "Station", "Verdict", "Score", "Defect / reason", "Model"):
        table.add_column(name)
    for r in genealogy.inspections:
        why = r.reason.value if r.reason is not None else (r.defect_class or "")
        table.add_row(
            r.inspected_at.isoformat(sep=" ", timespec="seconds"),
            str(r.run_id),
            str(r.sequence),
            r.station,
            r.verdict.value,
            "n/a" if not math.isfinite(r.score) else f"{r.score:.3f}",
            why,
            r.model_version,
            style=None if r.verdict is Verdict.OK else "red",
        )
    console.print(table)
    for c in genealogy.dispositions:
        where = f" at {c.failed_station}" if c.failed_station else ""
        reason = f" ({c.reason.value})" if c.reason is not None else ""
        console.print(f"run {c.run_id} #{c.sequence}: [bold]{c.disposition.value}[/bold]{where}{reason}")


# ------------------------------------------------------------------------------------------------- charts
def _note(text: str) -> str:
    return f"<div><p class='note'>{escape(text)}</p></div>"


def _fpy_figure(quality: LineQuality) -> str:
    defined = [s for s in quality.stations if s.fpy is not None and s.interval is not None]
    if not defined:
        return _note("No station has inspected a cell: FPY undefined.")
    fpy = [s.fpy or 0.0 for s in defined]
    low = [f - s.interval[0] for f, s in zip(fpy, defined, strict=True) if s.interval]
    high = [s.interval[1] - f for f, s in zip(fpy, defined, strict=True) if s.interval]
    fig = go.Figure(
        go.Bar(
            x=[s.station for s in defined],
            y=fpy,
            marker_color=_DEFECT,
            error_y={"type": "data", "symmetric": False, "array": high, "arrayminus": low, "color": "#1d2430"},
            text=[_pct(f) for f in fpy],
            textposition="inside",
            customdata=[[s.inspected, s.passed, _interval(s.interval)] for s in defined],
            hovertemplate="%{x}<br>FPY %{y:.1%} (95%: %{customdata[2]})<br>%{customdata[1]} of %{customdata[0]}"
            "<extra></extra>",
        )
    )
    if quality.rty is not None:
        fig.add_hline(
            y=quality.rty,
            line_dash="dash",
            line_color=_BAD,
            annotation_text=f"RTY {_pct(quality.rty)}",
            annotation_position="bottom left",
        )
    fig.update_layout(title="FPY per station, Wilson 95%", showlegend=False)
    fig.update_yaxes(range=[0, 1.05], tickformat=".0%", title="FPY")
    return figure_html(fig)


def _pareto_figure(quality: LineQuality) -> str:
    items = quality.pareto
    if not items:
        return _note("No NG or ERROR inspections: nothing to rank.")
    names = [i.category for i in items]
    fig = go.Figure()
    fig.add_bar(
        x=names,
        y=[i.count for i in items],
        marker_color=[_DEFECT if i.kind == "defect" else _REASON for i in items],
        customdata=[[i.kind, ", ".join(f"{s}: {n}" for s, n in i.by_station)] for i in items],
        hovertemplate="%{x} (%{customdata[0]})<br>%{y} inspections<br>%{customdata[1]}<extra></extra>",
        name="count",
    )
    fig.add_scatter(
        x=names,
        y=[100 * i.cumulative_share for i in items],
        yaxis="y2",
        mode="lines+markers",
        line_color=_BAD,
        name="cumulative %",
        hovertemplate="%{y:.1f}% cumulative<extra></extra>",
    )
    fig.add_hline(y=80, yref="y2", line_dash="dot", line_color="#98a2b3")
    fig.update_layout(
        title="Defect Pareto (blue: model's defect class, orange: line's ERROR/REVIEW reason)",
        yaxis={"title": "non-OK inspections", "rangemode": "tozero"},
        yaxis2={
            "title": "cumulative %",
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


def _pchart_figure(quality: LineQuality) -> str:
    chart = quality.pchart
    if chart.centre is None:
        return _note("No finished cells: no p-chart.")
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
    fig.add_hline(y=chart.centre, line_color="#067647", annotation_text=f"p̄ {_pct(chart.centre, 2)}")
    fig.add_scatter(
        x=x,
        y=[s.p for s in groups],
        mode="lines+markers",
        line_color=_DEFECT,
        marker={"size": 6},
        customdata=custom,
        hovertemplate="%{customdata[0]}<br>p = %{y:.2%} (%{customdata[1]} of %{customdata[2]})<extra></extra>",
        name="reject rate",
    )
    for name, pick, color, symbol in [
        (f"run of ≥{chart.run_length}", lambda s: s.in_run and not s.beyond_limits, _RUN, "diamond"),
        ("beyond limits", lambda s: s.beyond_limits, _BAD, "x"),
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
        title=f"p-chart of the reject rate (NG or REVIEW), {_chart_basis(chart)}",
        legend={"orientation": "h", "y": -0.3},
        xaxis={"tickmode": "array", "tickvals": x[::step], "ticktext": labels[::step], "title": "subgroup"},
    )
    fig.update_yaxes(tickformat=".0%", title="reject rate", rangemode="tozero")
    return figure_html(fig, width=_WIDE, height=480)


# ------------------------------------------------------------------------------------------------- tables
def _station_table(quality: LineQuality) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in ("Station", "Inspected", "Passed", "NG", "ERROR", "Re-insp.", "FPY", "95% CI", "Mean / p95 latency")
    )
    rows = []
    for s in quality.stations:
        fpy = "undefined (no cells)" if s.fpy is None else _pct(s.fpy)
        latency = f"{_ms(s.mean_latency_ms)} / {_ms(s.p95_latency_ms)}"
        nums = (s.inspected, s.passed, s.ng, s.error, s.reinspections)
        rows.append(
            f"<tr><td>{escape(s.station)}</td>"
            + "".join(f"<td class='num'>{v}</td>" for v in nums)
            + f"<td class='num'>{fpy}</td><td class='num'>{_interval(s.interval)}</td>"
            f"<td class='num'>{latency}</td></tr>"
        )
    final = quality.final
    summary = (
        f"<tr><th>Rolled throughput yield</th><td class='num'>{_pct(quality.rty)}</td>"
        "<td class='note'>product of the station FPYs: first time through every station</td></tr>"
        f"<tr><th>Final yield</th><td class='num'>{_with_interval(final.final_yield, final.interval, 'undefined')}"
        f"</td><td class='note'>{final.ok} OK of {final.cells} cells · {final.ng} NG · {final.review} REVIEW</td></tr>"
    )
    return f"<table><tr>{head}</tr>{''.join(rows)}</table><table>{summary}</table>"


def _signals_table(quality: LineQuality) -> str:
    signals = _signals(quality)
    if quality.pchart.centre is None:
        return ""
    if not signals:
        return "<p class='note'>No subgroup out of control.</p>"
    head = "".join(f"<th>{h}</th>" for h in ("Subgroup", "n", "Rejects", "p", "LCL–UCL", "Signal"))
    rows = "".join(
        f"<tr><td>{escape(label)}</td><td class='num'>{n}</td><td class='num'>{d}</td><td class='num bad'>{p}</td>"
        f"<td class='num'>{limits}</td><td>{escape(why)}</td></tr>"
        for label, n, d, p, limits, why in signals
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


def _genealogy_html(genealogy: Genealogy) -> str:
    title = f"<h2>Genealogy of {escape(genealogy.cell_id)}</h2>"
    if not genealogy.found:
        return title + "<p class='note'>No records for this cell ID.</p>"
    head = "".join(
        f"<th>{h}</th>"
        for h in ("Inspected at", "Run", "Seq", "Station", "Verdict", "Score", "Defect", "Reason", "Model", "Latency")
    )
    rows = []
    for r in genealogy.inspections:
        css = "ok" if r.verdict is Verdict.OK else "bad"
        score = "n/a" if not math.isfinite(r.score) else f"{r.score:.3f}"
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
    fate_head = "".join(f"<th>{h}</th>" for h in ("Run", "Seq", "Disposition", "Failed station", "Reason", "Finished"))
    fate_table = f"<table><tr>{fate_head}</tr>{fates}</table>" if fates else "<p class='note'>Not finished.</p>"
    return f"{title}<table><tr>{head}</tr>{''.join(rows)}</table><h3>Dispositions</h3>{fate_table}"


# ----------------------------------------------------------------------------------------------- outputs
def render_quality_html(
    quality: LineQuality, genealogy: Genealogy | None = None, title: str = "cellsight line quality",
    extra_html: str = "",
) -> str:
    """The whole page as a string: station table, FPY bars, Pareto, p-chart, optional genealogy."""
    stations = " → ".join(s.station for s in quality.stations)
    subtitle = f"{quality.inspections} inspections · {quality.final.cells} finished cells · line: {stations}"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_CSS}</style>{plotly_script_tag()}</head><body>"
        f"<h1>{escape(title)}</h1><p class='sub'>{escape(subtitle)}</p>"
        f"<h2>Yield</h2><p class='note'>FPY: cells OK at their first inspection at a station / cells that entered "
        "it (ERROR is not a pass; re-inspections do not count).</p>"
        f"<div class='plots'>{_fpy_figure(quality)}<div>{_station_table(quality)}</div></div>"
        f"<h2>Defect Pareto</h2>{_pareto_figure(quality)}"
        f"<h2>Reject rate control chart</h2><p class='note'>p-chart with 3-sigma limits per subgroup size; "
        f"signals: a point beyond a limit (Western Electric rule 1) and {quality.pchart.run_length} points in a "
        f"row on one side of the centre line (run rule).</p>{_pchart_figure(quality)}{_signals_table(quality)}"
        f"{extra_html}{_genealogy_html(genealogy) if genealogy is not None else ''}</body></html>"
    )


def write_quality_html(
    quality: LineQuality, path: str | Path, genealogy: Genealogy | None = None, title: str = "cellsight line quality",
    extra_html: str = "",
) -> Path:
    """One self-contained HTML file (plotly.js embedded) that opens offline; `extra_html` is already escaped."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_quality_html(quality, genealogy, title, extra_html), encoding="utf-8")
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
