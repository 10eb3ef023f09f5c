"""Input checks and JSON clean-up shared by the metric modules."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np


def check_labels(labels: Sequence[int] | np.ndarray, n: int | None = None) -> np.ndarray:
    """Labels as an int array of 0 (good) / 1 (defective); anything else is a caller bug."""
    arr = np.asarray(labels).ravel()
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError("labels must be 0 (good) or 1 (defective)")
    if n is not None and arr.size != n:
        raise ValueError(f"got {arr.size} labels for {n} scores/verdicts")
    return arr.astype(np.int64)


def failed_as_worst(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Scores as float64 with NaN (an image that could not be scored) ranked above every real score.

    A failed image is NG on the line, so ranking it as the most anomalous keeps the metrics consistent
    with the verdicts instead of crashing or silently dropping it.
    """
    arr = np.asarray(scores, dtype=np.float64).ravel()
    if np.isinf(arr).any():
        raise ValueError("scores must be finite (NaN marks a failed image)")
    missing = np.isnan(arr)
    if missing.any():
        finite = arr[~missing]
        top = float(finite.max()) if finite.size else 0.0
        arr = np.where(missing, top + max(1.0, abs(top)), arr)
    return arr


def one_class(labels: np.ndarray) -> bool:
    return labels.size == 0 or bool(np.all(labels == labels[0]))


def jsonable(value: Any) -> Any:
    """Plain JSON types: NaN/inf become null, numpy scalars/arrays become numbers/lists."""
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)
