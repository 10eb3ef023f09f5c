"""Image-level ranking metrics, thin wrappers over scikit-learn (imported in the functions: it takes ~2 s to
load, and predict, line and serve never compute a metric).

The wrappers add what a production evaluation needs: a single-class test set gives NaN (it cannot be
ranked) instead of an exception, and failed images (NaN score) rank as most anomalous.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cellsight.metrics._common import check_labels, failed_as_worst, one_class


def _prepare(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    s = failed_as_worst(scores)
    return check_labels(labels, s.size), s


def image_auroc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve of image scores; NaN when only one class is present."""
    y, s = _prepare(labels, scores)
    from sklearn.metrics import roc_auc_score

    return float("nan") if one_class(y) else float(roc_auc_score(y, s))


def average_precision(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Average precision with defective as the positive class; NaN when only one class is present."""
    y, s = _prepare(labels, scores)
    from sklearn.metrics import average_precision_score

    return float("nan") if one_class(y) else float(average_precision_score(y, s))


def f1_max(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Best F1 over all thresholds and the score threshold (NG when score >= it) that reaches it.

    (NaN, NaN) when only one class is present.
    """
    y, s = _prepare(labels, scores)
    if one_class(y):
        return float("nan"), float("nan")
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y, s)
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])
