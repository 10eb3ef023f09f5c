"""The evaluation report: every number a quality engineer asks for, as JSON (its HTML page: `cellsight.reporting`).

`build_report` computes it from predictions; `EvaluationReport` holds it, writes the JSON the CLI
contract promises (flat headline keys, NaN → null) and the self-contained HTML page.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellsight.calibration.thresholds import Calibration
from cellsight.metrics._common import check_labels, jsonable
from cellsight.metrics.image_metrics import average_precision, f1_max, image_auroc
from cellsight.metrics.naming import naming_summary
from cellsight.metrics.operating_point import OperatingPoint, operating_point
from cellsight.metrics.pixel_metrics import aupro, pixel_auroc
from cellsight.types import Prediction


@dataclass
class Example:
    """One image shown in a gallery: `anomaly_map` is normalised (0.5 = threshold), float32."""

    name: str
    label: int
    defect_class: str
    score: float
    image: np.ndarray = field(repr=False)
    anomaly_map: np.ndarray | None = field(default=None, repr=False)


@dataclass
class EvaluationReport:
    """Results of one detector on one test set.

    `scores` are the normalised scores (threshold 0.5, NaN for failed images) used for the histogram;
    `raw_scores`, when given, are the detector's own scores, used for the ROC curve so that clipping of
    the normalised scale does not create ties.
    """

    model: dict[str, Any]
    dataset: str
    n_images: int
    image_auroc: float
    image_ap: float
    image_f1max: float
    operating_point: OperatingPoint
    calibration: Calibration
    labels: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)
    raw_scores: np.ndarray | None = field(default=None, repr=False)
    image_f1max_threshold: float = float("nan")
    pixel_auroc: float | None = None
    aupro: float | None = None
    predict_images_per_second: float = float("nan")
    fit_seconds: float | None = None
    naming: dict[str, Any] | None = None
    """Defect naming on the flagged defective images (`metrics.naming`); None when the model names nothing."""
    worst_misses: list[Example] = field(default_factory=list, repr=False)
    false_calls: list[Example] = field(default_factory=list, repr=False)

    @property
    def threshold(self) -> float:
        """The raw-score threshold (NG when raw >= it); 0.5 on the normalised scale."""
        return self.calibration.threshold

    def to_json_dict(self) -> dict[str, Any]:
        """Flat headline keys first (the CLI contract), then the details; NaN → None."""
        op = self.operating_point
        data: dict[str, Any] = {
            "dataset": self.dataset,
            "n_images": self.n_images,
            "image_auroc": self.image_auroc,
            "image_ap": self.image_ap,
            "image_f1max": self.image_f1max,
            "image_f1max_threshold": self.image_f1max_threshold,
        }
        if self.pixel_auroc is not None:
            data["pixel_auroc"] = self.pixel_auroc
        if self.aupro is not None:
            data["aupro"] = self.aupro
        op_dict = op.to_dict()
        data |= {
            "escape_rate": op.escape.rate,
            "overkill_rate": op.overkill.rate,
            "accuracy": op.accuracy,
            "threshold": self.threshold,
            "operating_point": op_dict,
            "per_class_recall": op_dict["recall_per_class"],
            "confusion": op_dict["confusion"],
            "calibration": self.calibration.to_dict(),
            "model": self.model,
            "timing": {
                "fit_seconds": self.fit_seconds,
                "predict_images_per_second": self.predict_images_per_second,
            },
            "worst_misses": [_example_summary(e) for e in self.worst_misses],
            "false_calls": [_example_summary(e) for e in self.false_calls],
        }
        if self.naming is not None:
            data["naming"] = self.naming
        result: dict[str, Any] = jsonable(data)
        return result

    def write_json(self, path: str | Path) -> Path:
        """Strict JSON (no NaN tokens), so any consumer can parse it."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_json_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        return target


def _example_summary(example: Example) -> dict[str, Any]:
    return {
        "name": example.name,
        "label": example.label,
        "defect_class": example.defect_class,
        "score": example.score,
    }


def pick_examples(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, k: int = 6
) -> tuple[list[int], list[int]]:
    """Indices of the k defectives with the lowest scores and the k goods with the highest.

    These are the images an engineer must look at first. Failed images (NaN score) are left out: they
    are NG by rule and have no anomaly map to show.
    """
    y = check_labels(labels)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size != y.size:
        raise ValueError(f"got {y.size} labels for {s.size} scores")
    valid = ~np.isnan(s)
    defective = np.flatnonzero((y == 1) & valid)
    good = np.flatnonzero((y == 0) & valid)
    misses = defective[np.argsort(s[defective], kind="stable")][:k]
    false_calls = good[np.argsort(-s[good], kind="stable")][:k]
    return [int(i) for i in misses], [int(i) for i in false_calls]


def build_report(
    *,
    model: dict[str, Any],
    dataset: str,
    labels: Sequence[int],
    defect_classes: Sequence[str],
    predictions: Sequence[Prediction],
    calibration: Calibration,
    masks: Sequence[np.ndarray | None] | None = None,
    maps: Sequence[np.ndarray | None] | None = None,
    load_image: Callable[[int], np.ndarray] | None = None,
    names: Sequence[str] | None = None,
    fit_seconds: float | None = None,
    images_per_second: float | None = None,
    n_examples: int = 6,
) -> EvaluationReport:
    """Compute every metric from predictions on a labelled test set.

    Image metrics use the raw scores (the normalised scale is clipped, which would create ties).
    Pixel metrics need `masks` (None entries = all-good images); they use `maps` when given — pass
    the detector's raw maps (`Detector.score`) for benchmark-grade numbers — else the predictions'
    normalised maps. Images without a map (failed inspections) are left out of the pixel metrics; they
    are already counted as NG in the operating point. `load_image(i)` supplies gallery images; without
    it the galleries stay empty.
    """
    y = check_labels(labels, len(predictions))
    scores = np.array([p.score for p in predictions], dtype=np.float64)
    raw = np.array([p.raw_score for p in predictions], dtype=np.float64)
    if np.isnan(raw[~np.isnan(scores)]).any():  # predictions made without raw scores: rank on scores
        raw = scores.copy()
    f1, f1_threshold = f1_max(y, raw)
    pix_auroc = pro = None
    if masks is not None:
        chosen = maps if maps is not None else [p.anomaly_map for p in predictions]
        if len(masks) != len(predictions) or len(chosen) != len(predictions):
            raise ValueError("masks and maps need one entry per prediction")
        kept = [(m, a) for m, a in zip(masks, chosen, strict=True) if a is not None]
        pix_auroc = pixel_auroc([m for m, _ in kept], [a for _, a in kept])
        pro = aupro([m for m, _ in kept], [a for _, a in kept])
    if images_per_second is None:
        total_ms = sum(p.latency_ms for p in predictions)
        images_per_second = 1000.0 * len(predictions) / total_ms if total_ms > 0 else math.nan
    report = EvaluationReport(
        model=dict(model),
        dataset=dataset,
        n_images=len(predictions),
        image_auroc=image_auroc(y, raw),
        image_ap=average_precision(y, raw),
        image_f1max=f1,
        image_f1max_threshold=f1_threshold,
        operating_point=operating_point(y, [p.verdict for p in predictions], defect_classes),
        calibration=calibration,
        labels=y,
        scores=scores,
        raw_scores=raw,
        pixel_auroc=pix_auroc,
        aupro=pro,
        predict_images_per_second=float(images_per_second),
        fit_seconds=fit_seconds,
        naming=naming_summary(y.tolist(), defect_classes, predictions),
    )
    if load_image is not None:
        misses, false_calls = pick_examples(y, scores, n_examples)

        def example(i: int) -> Example:
            name = names[i] if names is not None else f"image {i}"
            p = predictions[i]
            return Example(name, int(y[i]), str(defect_classes[i]), p.score, load_image(i), p.anomaly_map)

        report.worst_misses = [example(i) for i in misses]
        report.false_calls = [example(i) for i in false_calls]
    return report
