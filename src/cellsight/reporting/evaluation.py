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

from cellsight.i18n import Localizer, localizer
from cellsight.metrics._common import failed_as_worst, jsonable, one_class
from cellsight.metrics.operating_point import RateWithInterval
from cellsight.metrics.overlay import overlay_heatmap, png_data_uri, thumbnail
from cellsight.metrics.report import EvaluationReport, Example
from cellsight.reporting.page import PAGE_CSS, escape, figure_html, plotly_script_tag, stylesheet

_CSS = PAGE_CSS + stylesheet("evaluation.css")


def _e(value: Any) -> str:
    return escape(value)


def _pct(value: float, loc: Localizer) -> str:
    return loc.percent(value if math.isfinite(value) else None)


def _num(value: float | None, loc: Localizer, digits: int = 3) -> str:
    return loc.number(value if value is None or math.isfinite(value) else None, digits)


def _rate(rate: RateWithInterval, loc: Localizer) -> str:
    """E.g. "12.3% (25/204, 95% CI 8.4–17.6%)" in the locale."""
    if rate.n == 0:
        return loc.gettext("n/a (0 images)")
    return loc.gettext("{rate} ({count}/{n}, 95% CI {low}–{high})").format(
        rate=loc.percent(rate.rate), count=rate.count, n=rate.n, low=loc.number(100 * rate.low, 1),
        high=loc.percent(rate.high))


def _headline(report: EvaluationReport, loc: Localizer) -> str:
    _ = loc.gettext
    op, cal = report.operating_point, report.calibration
    correct = op.confusion["good_ok"] + op.confusion["defective_ng"]
    target = _("the least expected cost") if cal.policy == "cost" else "≤" + _pct(cal.target, loc) + " " + _(cal.policy)
    basis = (_("{good} good + {defective} defective") if cal.n_defective else _("{good} good")).format(
        good=cal.n_good, defective=cal.n_defective)
    rows: list[tuple[str, str, str]] = [
        (_("Escape rate"), _rate(op.escape, loc), _("defective parts called OK — they reach the customer")),
        (_("Overkill rate"), _rate(op.overkill, loc), _("good parts called NG — false calls, scrap or re-inspection")),
        (_("Accuracy"), f"{_pct(op.accuracy, loc)} ({correct}/{report.n_images})", _("all images")),
        (_("Image AUROC"), _num(report.image_auroc, loc), _("ranking quality independent of the threshold")),
        (_("Image AP"), _num(report.image_ap, loc), _("average precision, defective = positive")),
        (_("Image F1 max"), _num(report.image_f1max, loc),
         _("at raw score {score}").format(score=_num(report.image_f1max_threshold, loc, 4))),
    ]
    if report.pixel_auroc is not None:
        rows.append((_("Pixel AUROC"), _num(report.pixel_auroc, loc), _("localisation, every pixel weighted equally")))
    if report.aupro is not None:
        rows.append(("AUPRO (FPR ≤ 30%)", _num(report.aupro, loc),
                     _("localisation, every defect region weighted equally")))
    rows += [
        (_("Threshold"), _("raw {raw} (= 0.5 normalised)").format(raw=f"{report.threshold:.6g}"),
         _("set for {target} on {basis} validation images").format(target=target, basis=basis)),
        (_("Inspection errors"), str(op.confusion["error"]), _("images that could not be inspected; counted as NG")),
        (_("Throughput"), _("{rate} images/s").format(rate=_num(report.predict_images_per_second, loc, 1)),
         _("prediction, incl. pre-processing")),
    ]
    if report.fit_seconds is not None:
        rows.append((_("Training time"), f"{loc.number(report.fit_seconds, 1)} s", _("fit on good images")))
    body = "".join(
        f"<tr><th>{_e(a)}</th><td class='num'>{_e(b)}</td><td>{_e(c)}</td></tr>" for a, b, c in rows
    )
    head = "".join(f"<th>{_e(h)}</th>" for h in (_("Metric"), _("Value"), _("Meaning")))
    return f"<table id='headline'><tr>{head}</tr>{body}</table>"


def _model_table(model: dict[str, Any], loc: Localizer) -> str:
    if not model:
        return ""
    rows = []
    for key, value in model.items():
        text = json.dumps(jsonable(value)) if isinstance(value, dict | list | tuple) else str(value)
        rows.append(f"<tr><th>{_e(key)}</th><td>{_e(text)}</td></tr>")
    return "<h2>" + _e(loc.gettext("Model")) + "</h2><table>" + "".join(rows) + "</table>"


def _figure_html(fig: go.Figure) -> str:
    return figure_html(fig)


def _roc_figure(report: EvaluationReport, loc: Localizer) -> str:
    _ = loc.gettext
    labels = np.asarray(report.labels)
    if one_class(labels):
        return "<div><p class='note'>" + _e(_("ROC curve needs both good and defective images.")) + "</p></div>"
    ranking = report.raw_scores if report.raw_scores is not None else report.scores
    from sklearn.metrics import roc_curve  # loaded only where a report is drawn (~2 s)

    fpr, tpr, _thresholds = roc_curve(labels, failed_as_worst(ranking))
    op = report.operating_point
    fig = go.Figure()
    fig.add_scatter(x=fpr, y=tpr, mode="lines", name="ROC", line={"width": 2})
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name=_("chance"), line={"dash": "dot", "color": "#98a2b3"})
    fig.add_scatter(
        x=[op.overkill.rate],
        y=[1 - op.escape.rate],
        mode="markers",
        name=_("operating point"),
        marker={"size": 11, "color": "#b42318", "symbol": "x"},
    )
    fig.update_layout(
        legend={"x": 0.98, "y": 0.02, "xanchor": "right", "yanchor": "bottom"},
        title=f"ROC (AUROC {_num(report.image_auroc, loc)})",
        xaxis_title=_("overkill rate (good called NG)"),
        yaxis_title=_("detection rate (defective called NG)"),
    )
    return "<div>" + _figure_html(fig) + "</div>"


def _histogram_figure(report: EvaluationReport, loc: Localizer) -> str:
    _ = loc.gettext
    labels = np.asarray(report.labels)
    scores = np.asarray(report.scores, dtype=np.float64)
    valid = ~np.isnan(scores)
    fig = go.Figure()
    bins = {"start": 0.0, "end": 1.0 + 1e-9, "size": 0.025}
    for label, name, colour in ((0, _("good"), "#12b76a"), (1, _("defective"), "#f04438")):
        chosen = scores[valid & (labels == label)]
        if chosen.size:
            fig.add_histogram(
                x=np.clip(chosen, 0, 1),
                name=f"{name} ({chosen.size})",
                xbins=bins,
                marker_color=colour,
                opacity=0.6,
            )
    fig.add_vline(x=0.5, line_dash="dash", line_color="#1d2430", annotation_text=_("threshold 0.5"))
    fig.update_layout(
        barmode="overlay",
        title=_("Normalised scores"),
        xaxis_title=_("score (NG when ≥ 0.5)"),
        yaxis_title=_("images"),
        xaxis_range=[0, 1.0],
    )
    missing = int((~valid).sum())
    text = _("{n} failed image(s) without a score are not shown.").format(n=missing)
    note = f"<p class='note'>{_e(text)}</p>" if missing else ""
    return "<div>" + _figure_html(fig) + note + "</div>"


def _confusion_table(report: EvaluationReport, loc: Localizer) -> str:
    _ = loc.gettext
    c = report.operating_point.confusion
    good, defective = c["good_ok"] + c["good_ng"], c["defective_ok"] + c["defective_ng"]

    def cell(count: int, total: int, css: str) -> str:
        share = f" ({_pct(count / total, loc)})" if total else ""
        return f"<td class='num {css}'>{count}{share}</td>"

    head, total, good_name, defective_name = (_e(x) for x in (_("actual / called"), _("total"), _("good"),
                                                               _("defective")))
    errors = _e(_("{n} image(s) could not be inspected; they are counted in NG.").format(n=c["error"]))
    return (
        f"<table id='confusion'><tr><th>{head}</th><th>OK</th><th>NG</th><th>{total}</th></tr>"
        f"<tr><th>{good_name}</th>{cell(c['good_ok'], good, 'ok')}{cell(c['good_ng'], good, 'bad')}"
        f"<td class='num'>{good}</td></tr>"
        f"<tr><th>{defective_name}</th>{cell(c['defective_ok'], defective, 'bad')}"
        f"{cell(c['defective_ng'], defective, 'ok')}<td class='num'>{defective}</td></tr></table>"
        f"<p class='note'>{errors}</p>"
    )


def _class_table(report: EvaluationReport, loc: Localizer) -> str:
    _ = loc.gettext
    op = report.operating_point

    def rows(per_class: dict[str, RateWithInterval], kind: str) -> str:
        return "".join(
            f"<tr><td>{_e(name)}</td><td>{_e(kind)}</td><td class='num'>{r.n}</td>"
            f"<td class='num'>{r.count}</td><td class='num'>{_e(_rate(r, loc))}</td></tr>"
            for name, r in per_class.items()
        )

    head = "".join(f"<th>{_e(h)}</th>" for h in (_("class"), _("rate"), _("images"), _("called NG"),
                                                  _("rate (95% CI)")))
    return (
        f"<table id='per-class'><tr>{head}</tr>"
        + rows(op.recall_per_class, _("recall (defective called NG)"))
        + rows(op.overkill_per_class, _("overkill (good called NG)"))
        + "</table>"
    )


def _gallery(examples: list[Example], empty: str, loc: Localizer) -> str:
    _ = loc.gettext
    if not examples:
        return f"<p class='note'>{_e(empty)}</p>"
    cards = []
    image_alt, heat_alt = _e(_("image")), _e(_("heat map"))
    for ex in examples:
        plain = png_data_uri(thumbnail(overlay_heatmap(ex.image, None)))
        heat = png_data_uri(thumbnail(overlay_heatmap(ex.image, ex.anomaly_map)))
        verdict = "<span class='ng'>NG</span>" if ex.score >= 0.5 else "<span class='okv'>OK</span>"
        cards.append(
            f"<div class='card'><div class='pair'><img src='{plain}' alt='{image_alt}'>"
            f"<img src='{heat}' alt='{heat_alt}'></div><div class='cap'><b>{_e(ex.name)}</b><br>"
            + _e(_("class {name} · score {score}").format(name=ex.defect_class, score=_num(ex.score, loc)))
            + f" · {verdict}</div></div>"
        )
    return "<div class='gallery'>" + "".join(cards) + "</div>"


def write_evaluation_html(report: EvaluationReport, path: str | Path, loc: Localizer | None = None) -> Path:
    """One self-contained HTML file (plotly.js, style and images embedded) that opens offline."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(report, loc), encoding="utf-8")
    return target


def render_html(report: EvaluationReport, loc: Localizer | None = None) -> str:
    """The whole page as a string, in `loc`'s language (English by default)."""
    loc = loc or localizer()
    _ = loc.gettext
    title = _("cellsight evaluation — {dataset}").format(dataset=report.dataset)
    detector = report.model.get("detector", "")
    subtitle = (_("{n} test images · detector {detector}") if detector else _("{n} test images")).format(
        n=report.n_images, detector=detector)
    sections = (
        (_("Headline"), _headline(report, loc)),
        (_("Scores"), f"<div class='plots'>{_roc_figure(report, loc)}{_histogram_figure(report, loc)}</div>"),
        (_("Confusion matrix"), _confusion_table(report, loc)),
        (_("Per class"), _class_table(report, loc)),
        (_("Worst misses"), "<p class='note'>" + _e(_(
            "Defective images with the lowest scores; left: image, right: heat map (red = above threshold)."))
         + "</p>" + _gallery(report.worst_misses, _("No defective images to show."), loc)),
        (_("False calls"), "<p class='note'>" + _e(_("Good images with the highest scores.")) + "</p>"
         + _gallery(report.false_calls, _("No good images to show."), loc)),
    )
    body = "".join(f"<h2>{_e(name)}</h2>{html}" for name, html in sections)
    return (
        f"<!DOCTYPE html><html lang='{_e(loc.html_lang)}'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style>"
        f"{plotly_script_tag()}</head><body>"
        f"<h1>{_e(title)}</h1><p class='sub'>{_e(subtitle)}</p>"
        f"{body}{_model_table(report.model, loc)}</body></html>"
    )
