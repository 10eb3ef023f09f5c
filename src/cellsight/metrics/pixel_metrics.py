"""Pixel-level localisation metrics: pixel AUROC and the MVTec AUPRO.

Pixel AUROC is dominated by large defects; AUPRO weights every connected defect region equally, so a
small crack counts as much as a large delamination — closer to how an inspector judges localisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def _aligned(
    masks: Sequence[np.ndarray | None], maps: Sequence[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(binary mask, float map) pairs of equal size; a None mask is an all-good image."""
    if len(masks) != len(maps):
        raise ValueError(f"got {len(masks)} masks for {len(maps)} anomaly maps")
    pairs = []
    for mask, amap in zip(masks, maps, strict=True):
        values = np.asarray(amap, dtype=np.float32)
        if values.ndim != 2:
            raise ValueError(f"anomaly maps must be 2-D, got shape {values.shape}")
        binary: np.ndarray
        if mask is None:
            binary = np.zeros(values.shape, dtype=bool)
        else:
            raw_mask: np.ndarray = np.asarray(mask)
            if raw_mask.ndim == 3:
                raw_mask = raw_mask.max(axis=2)
            binary = np.asarray(raw_mask > 0)
            if binary.shape != values.shape:
                height, width = binary.shape[:2]
                resized = cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)
                values = np.asarray(resized, dtype=np.float32)
        pairs.append((binary, values))
    return _failed_as_worst(pairs)


def _failed_as_worst(pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """NaN map values (failed inference) rank above every real value, as failed images do."""
    if not any(np.isnan(v).any() for _, v in pairs):
        return pairs
    tops = [float(np.nanmax(v)) for _, v in pairs if not np.isnan(v).all()]
    top = max(tops, default=0.0)
    worst = np.float32(top + max(1.0, abs(top)))
    return [(b, np.where(np.isnan(v), worst, v)) for b, v in pairs]


def pixel_auroc(masks: Sequence[np.ndarray | None], maps: Sequence[np.ndarray]) -> float:
    """ROC AUC over all pixels of all images; NaN when there are no defect (or no good) pixels."""
    pairs = _aligned(masks, maps)
    if not pairs:
        return float("nan")
    truth = np.concatenate([m.ravel() for m, _ in pairs])
    if truth.all() or not truth.any():
        return float("nan")
    from sklearn.metrics import roc_auc_score  # loaded only where a metric is computed (~2 s)

    return float(roc_auc_score(truth, np.concatenate([v.ravel() for _, v in pairs])))


def pro_curve(
    masks: Sequence[np.ndarray | None], maps: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) at every distinct map value, thresholds descending, starting at (0, 0).

    FPR is over all good pixels of all images; PRO is the mean over defect regions (8-connected
    components of each mask) of the fraction of the region at or above the threshold. Instead of one
    pass per threshold: sort the good values once (FPR = share of them >= t, by binary search), and
    give each defect pixel of region r the weight 1/(|r|·n_regions), so PRO(t) is a suffix sum of the
    sorted defect weights.
    """
    good_values, defect_values, defect_weights = [], [], []
    n_regions = 0
    for binary, amap in _aligned(masks, maps):
        count, regions = cv2.connectedComponents(binary.astype(np.uint8), connectivity=8)
        flat, values = regions.ravel(), amap.ravel()
        good_values.append(values[flat == 0])
        if count > 1:
            inverse_size = 1.0 / np.maximum(np.bincount(flat, minlength=count), 1)
            defect_values.append(values[flat > 0])
            defect_weights.append(inverse_size[flat[flat > 0]])
            n_regions += count - 1
    good_sorted = np.sort(np.concatenate(good_values)) if good_values else np.zeros(0, np.float32)
    if n_regions == 0 or good_sorted.size == 0:
        return np.zeros(1), np.zeros(1)
    defect = np.concatenate(defect_values)
    order = np.argsort(defect, kind="stable")
    defect_sorted = defect[order]
    # suffix[i]: PRO contributed by the defect pixels at sorted positions >= i
    suffix = np.append(np.cumsum(np.concatenate(defect_weights)[order][::-1])[::-1], 0.0) / n_regions
    thresholds = np.unique(np.concatenate([good_sorted, defect_sorted]))[::-1]
    fpr = (good_sorted.size - np.searchsorted(good_sorted, thresholds, side="left")) / good_sorted.size
    pro = np.minimum(suffix[np.searchsorted(defect_sorted, thresholds, side="left")], 1.0)
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], pro])


def _area_up_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under y(x) for x in [0, limit], interpolating the point at the limit."""
    inside = int(np.searchsorted(x, limit, side="right"))
    xs, ys = x[:inside], y[:inside]
    if inside < x.size and xs[-1] < limit:
        x0, x1, y0, y1 = x[inside - 1], x[inside], y[inside - 1], y[inside]
        xs = np.append(xs, limit)
        ys = np.append(ys, y0 + (y1 - y0) * (limit - x0) / (x1 - x0))
    return float(0.5 * np.sum(np.diff(xs) * (ys[1:] + ys[:-1])))


def aupro(masks: Sequence[np.ndarray | None], maps: Sequence[np.ndarray], fpr_limit: float = 0.3) -> float:
    """Area under the PRO-vs-FPR curve up to `fpr_limit`, divided by `fpr_limit` (so 1.0 is perfect).

    NaN when there is no defect region or no good pixel.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    fpr, pro = pro_curve(masks, maps)
    if fpr.size == 1:
        return float("nan")
    return _area_up_to(fpr, pro, fpr_limit) / fpr_limit
