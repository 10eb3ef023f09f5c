"""The evaluation report: strict JSON with the CLI's keys and a self-contained HTML page."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from plotly.offline import get_plotlyjs

from cellsight.calibration import calibrate_for_overkill
from cellsight.metrics import EvaluationReport, build_report, pick_examples
from cellsight.reporting import write_evaluation_html
from cellsight.types import Prediction, Verdict

REQUIRED_KEYS = {
    "image_auroc", "image_ap", "image_f1max", "escape_rate", "overkill_rate", "accuracy", "threshold",
    "operating_point", "per_class_recall", "confusion", "model", "dataset", "timing",
}  # fmt: skip


def synthetic_report(with_masks: bool = True) -> EvaluationReport:
    rng = np.random.default_rng(7)
    labels = [0] * 12 + [1] * 8
    classes = ["good"] * 10 + ["maybe_good"] * 2 + ["crack"] * 5 + ["finger <i>"] * 3
    raw = np.concatenate([rng.normal(1.0, 0.2, 12), rng.normal(2.0, 0.5, 8)])
    calibration = calibrate_for_overkill(rng.normal(1.0, 0.2, 40), 0.05)
    images = [rng.integers(0, 255, (48, 64), dtype=np.uint8) for _ in labels]
    masks: list[np.ndarray | None] = []
    predictions = []
    for i, (label, score) in enumerate(zip(labels, raw, strict=True)):
        raw_map = rng.normal(1.0, 0.1, (48, 64)).astype(np.float32)
        mask = None
        if label:
            mask = np.zeros((48, 64), np.uint8)
            mask[10:20, 20:40] = 255
            raw_map[10:20, 20:40] += score - 1.0
        masks.append(mask)
        if i == 19:  # an image that could not be inspected
            predictions.append(Prediction.failed("unreadable file", latency_ms=1.0))
            continue
        normalised = float(calibration.normalise(float(score)))
        predictions.append(
            Prediction(
                score=normalised,
                verdict=Verdict.NG if normalised >= 0.5 else Verdict.OK,
                raw_score=float(score),
                anomaly_map=calibration.normalise(raw_map),
                latency_ms=20.0,
            )
        )
    return build_report(
        model={"detector": "patchcore", "backbone": "wide_resnet50", "hash": "abc123", "extra": {"k": 1}},
        dataset="<script>alert('x')</script> cells",
        labels=labels,
        defect_classes=classes,
        predictions=predictions,
        calibration=calibration,
        masks=masks if with_masks else None,
        load_image=lambda i: images[i],
        names=[f"cell_{i:02d}.png" for i in range(20)],
        fit_seconds=12.5,
        n_examples=3,
    )


def test_json_is_strict_and_has_the_contract_keys(tmp_path: Path) -> None:
    report = synthetic_report()
    path = report.write_json(tmp_path / "out" / "eval.json")
    data = json.loads(path.read_text())
    assert set(data) >= REQUIRED_KEYS
    assert {"pixel_auroc", "aupro"} <= set(data)
    assert 0.0 <= data["pixel_auroc"] <= 1.0 and 0.0 <= data["aupro"] <= 1.0
    assert data["threshold"] == report.calibration.threshold
    assert data["confusion"]["error"] == 1
    assert data["n_images"] == 20
    assert data["escape_rate"] == report.operating_point.escape.rate
    assert set(data["per_class_recall"]) == {"crack", "finger <i>"}
    assert data["timing"]["fit_seconds"] == 12.5
    assert data["timing"]["predict_images_per_second"] == pytest.approx(1000 * 20 / 381)  # 19 x 20 ms + 1 ms
    assert len(data["worst_misses"]) == 3 and len(data["false_calls"]) == 3
    json.dumps(data, allow_nan=False)


def test_json_without_masks_omits_pixel_metrics_and_nan_becomes_null() -> None:
    report = synthetic_report(with_masks=False)
    report.image_ap = float("nan")
    data = report.to_json_dict()
    assert "pixel_auroc" not in data and "aupro" not in data
    assert data["image_ap"] is None
    json.dumps(data, allow_nan=False)


def test_html_is_self_contained_and_shows_the_numbers(tmp_path: Path) -> None:
    report = synthetic_report()
    text = write_evaluation_html(report, tmp_path / "eval.html").read_text(encoding="utf-8")
    plotly_js = get_plotlyjs()
    assert text.count(plotly_js[:500]) == 1  # embedded exactly once
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, flags=re.IGNORECASE)
    assert text.count("Plotly.newPlot") >= 2  # ROC and histogram
    assert report.operating_point.escape.describe() in text
    assert report.operating_point.overkill.describe() in text
    assert f"{report.image_auroc:.3f}" in text
    assert text.count("<img src='data:image/png;base64,") == 2 * 6  # image + overlay, 3 misses + 3 calls
    assert "cell_" in text and "maybe_good" in text
    assert "<script>alert" not in text and "&lt;script&gt;alert" in text
    assert "finger &lt;i&gt;" in text


def test_pick_examples_orders_and_skips_failed() -> None:
    labels = [0, 0, 0, 1, 1, 1]
    scores = [0.1, 0.9, float("nan"), 0.3, float("nan"), 0.05]
    misses, false_calls = pick_examples(labels, scores, k=5)
    assert misses == [5, 3]
    assert false_calls == [1, 0]


def test_build_report_handles_one_class_sets() -> None:
    calibration = calibrate_for_overkill(np.linspace(0, 1, 20))
    predictions = [Prediction(score=0.2, verdict=Verdict.OK, raw_score=0.3) for _ in range(4)]
    report = build_report(
        model={}, dataset="good only", labels=[0] * 4, defect_classes=["good"] * 4,
        predictions=predictions, calibration=calibration,
    )  # fmt: skip
    assert math.isnan(report.image_auroc)
    data = report.to_json_dict()
    assert data["image_auroc"] is None and data["escape_rate"] is None and data["overkill_rate"] == 0.0
    assert math.isnan(report.predict_images_per_second)


def test_the_report_reads_in_german_and_chinese(tmp_path: Path) -> None:
    from cellsight.i18n import localizer

    report = synthetic_report()
    german = write_evaluation_html(report, tmp_path / "de.html", localizer("de")).read_text(encoding="utf-8")
    assert "<html lang='de'>" in german and "Durchschlupfrate" in german and "Konfusionsmatrix" in german
    assert "12,5\xa0% (1/8, 95-%-KI 2,2–47,1\xa0%)" in german  # German numbers
    chinese = write_evaluation_html(report, tmp_path / "zh.html", localizer("zh_CN")).read_text(encoding="utf-8")
    assert "<html lang='zh-CN'>" in chinese and "漏检率" in chinese and "Escape rate" not in chinese
