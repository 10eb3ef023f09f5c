"""Render an `EvaluationReport` (computed in `cellsight.metrics`) as one self-contained HTML page.

plotly.js is embedded once in the page head (no CDN: inspection PCs are often offline), images are PNG
data URIs, and every user-provided string is HTML-escaped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from sklearn.metrics import roc_curve

from cellsight.metrics._common import failed_as_worst, jsonable, one_class
from cellsight.metrics.operating_point import RateWithInterval
from cellsight.metrics.overlay import overlay_heatmap, png_data_uri, thumbnail
from cellsight.metrics.report import EvaluationReport, Example
from cellsight.reporting.page import PAGE_CSS, escape, figure_html, plotly_script_tag, stylesheet

_CSS = PAGE_CSS + stylesheet("evaluation.css")


def _e(value: Any) -> str:
    return escape(value)


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _headline(report: EvaluationReport) -> str:
    op, cal = report.operating_point, report.calibration
    correct = op.confusion["good_ok"] + op.confusion["defective_ng"]
    target = f"≤{_pct(cal.target)} {cal.policy}"
    basis = f"{cal.n_good} good" + (f" + {cal.n_defective} defective" if cal.n_defective else "")
    rows: list[tuple[str, str, str]] = [
        ("Escape rate", op.escape.describe(), "defective parts called OK — they reach the customer"),
        (
            "Overkill rate",
            op.overkill.describe(),
            "good parts called NG — false calls, scrap or re-inspection",
        ),
        ("Accuracy", f"{_pct(op.accuracy)} ({correct}/{report.n_images})", "all images"),
        ("Image AUROC", _num(report.image_auroc), "ranking quality independent of the threshold"),
        ("Image AP", _num(report.image_ap), "average precision, defective = positive"),
        ("Image F1 max", _num(report.image_f1max), f"at raw score {_num(report.image_f1max_threshold, 4)}"),
    ]
    if report.pixel_auroc is not None:
        rows.append(("Pixel AUROC", _num(report.pixel_auroc), "localisation, every pixel weighted equally"))
    if report.aupro is not None:
        rows.append(
            ("AUPRO (FPR ≤ 30%)", _num(report.aupro), "localisation, every defect region weighted equally")
        )
    rows += [
        (
            "Threshold",
            f"raw {report.threshold:.6g} (= 0.5 normalised)",
            f"set for {target} on {basis} validation images",
        ),
        (
            "Inspection errors",
            str(op.confusion["error"]),
            "images that could not be inspected; counted as NG",
        ),
        (
            "Throughput",
            f"{_num(report.predict_images_per_second, 1)} images/s",
            "prediction, incl. pre-processing",
        ),
    ]
    if report.fit_seconds is not None:
        rows.append(("Training time", f"{report.fit_seconds:.1f} s", "fit on good images"))
    body = "".join(
        f"<tr><th>{_e(a)}</th><td class='num'>{_e(b)}</td><td>{_e(c)}</td></tr>" for a, b, c in rows
    )
    return f"<table id='headline'><tr><th>Metric</th><th>Value</th><th>Meaning</th></tr>{body}</table>"


def _model_table(model: dict[str, Any]) -> str:
    if not model:
        return ""
    rows = []
    for key, value in model.items():
        text = json.dumps(jsonable(value)) if isinstance(value, dict | list | tuple) else str(value)
        rows.append(f"<tr><th>{_e(key)}</th><td>{_e(text)}</td></tr>")
    return "<h2>Model</h2><table>" + "".join(rows) + "</table>"


def _figure_html(fig: go.Figure) -> str:
    return figure_html(fig)


def _roc_figure(report: EvaluationReport) -> str:
    labels = np.asarray(report.labels)
    if one_class(labels):
        return "<div><p class='note'>ROC curve needs both good and defective images.</p></div>"
    ranking = report.raw_scores if report.raw_scores is not None else report.scores
    fpr, tpr, _ = roc_curve(labels, failed_as_worst(ranking))
    op = report.operating_point
    fig = go.Figure()
    fig.add_scatter(x=fpr, y=tpr, mode="lines", name="ROC", line={"width": 2})
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"dash": "dot", "color": "#98a2b3"})
    fig.add_scatter(
        x=[op.overkill.rate],
        y=[1 - op.escape.rate],
        mode="markers",
        name="operating point",
        marker={"size": 11, "color": "#b42318", "symbol": "x"},
    )
    fig.update_layout(
        legend={"x": 0.98, "y": 0.02, "xanchor": "right", "yanchor": "bottom"},
        title=f"ROC (AUROC {_num(report.image_auroc)})",
        xaxis_title="overkill rate (good called NG)",
        yaxis_title="detection rate (defective called NG)",
    )
    return "<div>" + _figure_html(fig) + "</div>"


def _histogram_figure(report: EvaluationReport) -> str:
    labels = np.asarray(report.labels)
    scores = np.asarray(report.scores, dtype=np.float64)
    valid = ~np.isnan(scores)
    fig = go.Figure()
    bins = {"start": 0.0, "end": 1.0 + 1e-9, "size": 0.025}
    for label, name, colour in ((0, "good", "#12b76a"), (1, "defective", "#f04438")):
        chosen = scores[valid & (labels == label)]
        if chosen.size:
            fig.add_histogram(
                x=np.clip(chosen, 0, 1),
                name=f"{name} ({chosen.size})",
                xbins=bins,
                marker_color=colour,
                opacity=0.6,
            )
    fig.add_vline(x=0.5, line_dash="dash", line_color="#1d2430", annotation_text="threshold 0.5")
    fig.update_layout(
        barmode="overlay",
        title="Normalised scores",
        xaxis_title="score (NG when ≥ 0.5)",
        yaxis_title="images",
        xaxis_range=[0, 1.0],
    )
    missing = int((~valid).sum())
    note = f"<p class='note'>{missing} failed image(s) without a score are not shown.</p>" if missing else ""
    return "<div>" + _figure_html(fig) + note + "</div>"


def _confusion_table(report: EvaluationReport) -> str:
    c = report.operating_point.confusion
    good, defective = c["good_ok"] + c["good_ng"], c["defective_ok"] + c["defective_ng"]

    def cell(count: int, total: int, css: str) -> str:
        share = f" ({_pct(count / total)})" if total else ""
        return f"<td class='num {css}'>{count}{share}</td>"

    return (
        "<table id='confusion'><tr><th>actual \\ called</th><th>OK</th><th>NG</th><th>total</th></tr>"
        f"<tr><th>good</th>{cell(c['good_ok'], good, 'ok')}{cell(c['good_ng'], good, 'bad')}"
        f"<td class='num'>{good}</td></tr>"
        f"<tr><th>defective</th>{cell(c['defective_ok'], defective, 'bad')}"
        f"{cell(c['defective_ng'], defective, 'ok')}<td class='num'>{defective}</td></tr></table>"
        f"<p class='note'>{c['error']} image(s) could not be inspected; they are counted in NG.</p>"
    )


def _class_table(report: EvaluationReport) -> str:
    op = report.operating_point

    def rows(per_class: dict[str, RateWithInterval], kind: str) -> str:
        return "".join(
            f"<tr><td>{_e(name)}</td><td>{kind}</td><td class='num'>{r.n}</td>"
            f"<td class='num'>{r.count}</td><td class='num'>{_e(r.describe())}</td></tr>"
            for name, r in per_class.items()
        )

    return (
        "<table id='per-class'><tr><th>class</th><th>rate</th><th>images</th><th>called NG</th>"
        "<th>rate (95% CI)</th></tr>"
        + rows(op.recall_per_class, "recall (defective called NG)")
        + rows(op.overkill_per_class, "overkill (good called NG)")
        + "</table>"
    )


def _gallery(examples: list[Example], empty: str) -> str:
    if not examples:
        return f"<p class='note'>{_e(empty)}</p>"
    cards = []
    for ex in examples:
        plain = png_data_uri(thumbnail(overlay_heatmap(ex.image, None)))
        heat = png_data_uri(thumbnail(overlay_heatmap(ex.image, ex.anomaly_map)))
        verdict = "<span class='ng'>NG</span>" if ex.score >= 0.5 else "<span class='okv'>OK</span>"
        cards.append(
            f"<div class='card'><div class='pair'><img src='{plain}' alt='image'>"
            f"<img src='{heat}' alt='heat map'></div><div class='cap'><b>{_e(ex.name)}</b><br>"
            f"class {_e(ex.defect_class)} · score {_num(ex.score)} · {verdict}</div></div>"
        )
    return "<div class='gallery'>" + "".join(cards) + "</div>"


def write_evaluation_html(report: EvaluationReport, path: str | Path) -> Path:
    """One self-contained HTML file (plotly.js, style and images embedded) that opens offline."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(report), encoding="utf-8")
    return target


def render_html(report: EvaluationReport) -> str:
    """The whole page as a string."""
    title = f"cellsight evaluation — {report.dataset}"
    detector = report.model.get("detector", "")
    subtitle = f"{report.n_images} test images" + (f" · detector {detector}" if detector else "")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style>"
        f"{plotly_script_tag()}</head><body>"
        f"<h1>{_e(title)}</h1><p class='sub'>{_e(subtitle)}</p>"
        f"<h2>Headline</h2>{_headline(report)}"
        f"<h2>Scores</h2><div class='plots'>{_roc_figure(report)}{_histogram_figure(report)}</div>"
        f"<h2>Confusion matrix</h2>{_confusion_table(report)}"
        f"<h2>Per class</h2>{_class_table(report)}"
        "<h2>Worst misses</h2><p class='note'>Defective images with the lowest scores; "
        "left: image, right: heat map (red = above threshold).</p>"
        f"{_gallery(report.worst_misses, 'No defective images to show.')}"
        "<h2>False calls</h2><p class='note'>Good images with the highest scores.</p>"
        f"{_gallery(report.false_calls, 'No good images to show.')}"
        f"{_model_table(report.model)}</body></html>"
    )
