"""The detector interface: scikit-learn's fit/predict shape, and a state for the model file.

A detector turns images into raw anomaly scores and maps (`score_images`); a `Calibration` turns raw
numbers into the normalised score (threshold = 0.5) and the verdict. Keeping the two apart lets the same
fitted detector be re-calibrated for another overkill target without refitting.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Self

import numpy as np
import torch

from cellsight.calibration.thresholds import Calibration
from cellsight.errors import NotFittedError
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


class NotCalibratedError(NotFittedError):
    """A fitted detector without a threshold: calibrate it before predict."""


class Detector(ABC):
    """Base class of every detector. Images are numpy arrays as `cellsight.data.images` reads them."""

    name: ClassVar[str]
    uses_labels: ClassVar[bool] = False
    """True for detectors that learn from labelled defects (`fit_labelled`), False for good-only ones."""
    learns_defect_names: ClassVar[bool] = False
    """True for good-only detectors that can learn to name defects from a few labelled examples
    (`fit_defect_names`); the train workflow then hands them the train split's defects."""

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

    def fit_defect_names(
        self, images: Sequence[np.ndarray], classes: Sequence[str], masks: Sequence[np.ndarray | None] | None = None
    ) -> Self:
        """After `fit`: learn the defect classes' names from labelled defect images (and masks, where known)."""
        raise NotImplementedError(f"{self.name} cannot learn defect names")

    def name_defects(self, images: Sequence[np.ndarray], raw_maps: Sequence[np.ndarray]) -> list[str] | None:
        """The defect class of each image (all flagged NG), given its raw map; None: this detector names none.

        Called with the flagged images only, so naming costs nothing on good parts.
        """
        return None

    @abstractmethod
    def score_images(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Raw image scores (higher = more anomalous) and raw anomaly maps, each the input's size."""

    def score_and_name(
        self, images: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray], list[str | None] | None]:
        """`score_images` plus, for detectors that name defects in the same pass (a class head), each image's
        most likely defect class; None where naming is a separate step on the flagged images (`name_defects`)."""
        scores, maps = self.score_images(images)
        return scores, maps, None

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
        return predict_with_maps(self, images)[0]


def predict_with_maps(detector: Detector, images: Sequence[np.ndarray]) -> tuple[list[Prediction], list[np.ndarray]]:
    """Predictions (NG ones named where the detector can) and the raw maps: the one inference path."""
    assert detector.calibration is not None
    start = time.perf_counter()
    raw_scores, raw_maps, classes = detector.score_and_name(images)
    predictions = make_predictions(detector.calibration, raw_scores, raw_maps, 0.0)
    if classes is None:
        predictions = name_flagged(detector, images, raw_maps, predictions)
    else:
        predictions = [
            replace(p, defect_class=c) if p.verdict is Verdict.NG and c else p
            for p, c in zip(predictions, classes, strict=True)
        ]
    latency_ms = (time.perf_counter() - start) * 1000.0 / max(len(images), 1)
    return [replace(p, latency_ms=latency_ms) for p in predictions], list(raw_maps)


def name_flagged(
    detector: Detector, images: Sequence[np.ndarray], raw_maps: Sequence[np.ndarray], predictions: list[Prediction]
) -> list[Prediction]:
    """The predictions with each NG one's defect class from `detector.name_defects` (kept when it names none)."""
    flagged = [i for i, p in enumerate(predictions) if p.verdict is Verdict.NG]
    if not flagged:
        return predictions
    names = detector.name_defects([images[i] for i in flagged], [raw_maps[i] for i in flagged])
    if names is None:
        return predictions
    if len(names) != len(flagged):
        raise RuntimeError(f"{detector.name} named {len(names)} defects for {len(flagged)} flagged images")
    out = list(predictions)
    for i, name in zip(flagged, names, strict=True):
        out[i] = replace(out[i], defect_class=name)
    return out


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
