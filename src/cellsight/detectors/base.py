"""The detector interface: scikit-learn's fit/predict shape, and a state for the model file.

A detector turns images into raw anomaly scores and maps (`score_images`); a `Calibration` turns raw
numbers into the normalised score (threshold = 0.5) and the verdict. Keeping the two apart lets the same
fitted detector be re-calibrated for another overkill target without refitting.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import torch

from cellsight.calibration.thresholds import Calibration
from cellsight.types import Prediction, Verdict

ProgressCallback = Callable[[int], None]
"""Called with the number of images just processed, so a CLI can advance its progress bar."""
ProgressFactory = Callable[[str, int], ProgressCallback]
"""Given a step description and its total, returns the callback that advances that step's bar."""


@dataclass(frozen=True)
class LabelledImages:
    """Images with their labels, for detectors that learn from defects.

    `labels` are 0 (good) / 1 (defective); `defect_classes` are "good" for good images; `masks` holds,
    per image, a 2-D array (non-zero = defect) or None where no mask is known. Images and masks may be
    lazy sequences: they are read when the detector iterates.
    """

    images: Sequence[np.ndarray]
    labels: Sequence[int]
    defect_classes: Sequence[str]
    masks: Sequence[np.ndarray | None]

    def __post_init__(self) -> None:
        n = len(self.images)
        if not len(self.labels) == len(self.defect_classes) == len(self.masks) == n:
            raise ValueError("images, labels, defect classes and masks must have the same length")

    def __len__(self) -> int:
        return len(self.images)


class NotCalibratedError(RuntimeError):
    pass


class Detector(ABC):
    """Base class of every detector. Images are numpy arrays as `cellsight.data.images` reads them."""

    name: ClassVar[str]
    uses_labels: ClassVar[bool] = False
    """True for detectors that learn from labelled defects (`fit_labelled`), False for good-only ones."""

    def __init__(self) -> None:
        self.calibration: Calibration | None = None

    @abstractmethod
    def fit(self, images: Sequence[np.ndarray], progress: ProgressCallback | None = None) -> Self:
        """Learn from good images only."""

    def fit_labelled(
        self, train: LabelledImages, val: LabelledImages, progress: ProgressFactory | None = None
    ) -> Self:
        """Learn from good and defective images; `val` is held out (early stopping, combination weights)."""
        raise NotImplementedError(f"{self.name} learns from good images only: use fit()")

    @abstractmethod
    def score_images(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Raw image scores (higher = more anomalous) and raw anomaly maps, each the input's size."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings needed to rebuild the detector."""

    @abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]:
        """The learned state as named tensors (stored with safetensors)."""

    @classmethod
    @abstractmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Self:
        """Rebuild a fitted detector from `config()` and `tensors()`."""

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Scores, maps and verdicts for a batch; needs a calibration."""
        if self.calibration is None:
            raise NotCalibratedError(f"{self.name} detector has no calibration: calibrate it before predict")
        start = time.perf_counter()
        raw_scores, raw_maps = self.score_images(images)
        latency_ms = (time.perf_counter() - start) * 1000.0 / max(len(images), 1)
        return make_predictions(self.calibration, raw_scores, raw_maps, latency_ms)


def make_predictions(
    calibration: Calibration,
    raw_scores: np.ndarray,
    raw_maps: Sequence[np.ndarray],
    latency_ms: float,
) -> list[Prediction]:
    """Raw detector output -> normalised scores, maps and verdicts (NG when score >= 0.5)."""
    predictions = []
    for raw, raw_map in zip(raw_scores, raw_maps, strict=True):
        score = float(calibration.normalise(float(raw)))
        predictions.append(
            Prediction(
                score=score,
                verdict=Verdict.NG if score >= 0.5 else Verdict.OK,
                raw_score=float(raw),
                defect_class="anomaly" if score >= 0.5 else None,
                anomaly_map=np.asarray(calibration.normalise(raw_map), dtype=np.float32),
                latency_ms=latency_ms,
            )
        )
    return predictions
