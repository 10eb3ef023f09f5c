"""Train a station's model: fit on good images, calibrate on held-out images, save one model file.

Calibration never uses the images the detector was fitted on (a memory bank scores its own images near
zero, which would set a threshold far too low). Where the data set has a `val` split it is used;
otherwise a seeded fraction of the good training images is held out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cellsight.calibration import Calibration, calibrate_for_escape, calibrate_for_overkill
from cellsight.data.dataset import GOOD, Dataset
from cellsight.data.images import LazyImages
from cellsight.detectors.base import Detector
from cellsight.detectors.registry import detector_class
from cellsight.modelfile import save_model

Policy = Literal["overkill", "escape"]
ProgressFactory = Callable[[str, int], Callable[[int], None]]
"""Given a step description and its total, returns the callback that advances that step's bar."""


@dataclass(frozen=True)
class CalibrationSplit:
    fit: Dataset
    good: Dataset
    defective: Dataset


@dataclass(frozen=True)
class TrainResult:
    detector: Detector
    content_hash: str
    fit_seconds: float
    calibration: Calibration
    split: CalibrationSplit


def calibration_split(dataset: Dataset, val_fraction: float, seed: int) -> CalibrationSplit:
    """Which images fit the detector and which set its threshold."""
    train_good = dataset.select(split="train", defect_class=GOOD)
    if len(train_good) == 0:
        raise ValueError(f"data set {dataset.name!r} has no good images in its train split")
    val = dataset.select(split="val")
    if len(val.select(label=0)) > 0:
        return CalibrationSplit(train_good, val.select(label=0), val.select(label=1))
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = max(1, round(len(train_good) * val_fraction))
    if n_val >= len(train_good):
        raise ValueError(f"{len(train_good)} good training images are too few to hold out {n_val} for calibration")
    order = np.random.default_rng(seed).permutation(len(train_good))
    held = set(order[:n_val].tolist())
    items = train_good.items
    fit = Dataset(dataset.name, tuple(item for i, item in enumerate(items) if i not in held))
    good = Dataset(dataset.name, tuple(item for i, item in enumerate(items) if i in held))
    # Labelled defects in the train split are unused by a good-only fit: they may calibrate escapes.
    return CalibrationSplit(fit, good, dataset.select(split="train", label=1))


def train(
    dataset: Dataset,
    out: Path,
    detector_name: str = "patchcore",
    options: dict[str, Any] | None = None,
    policy: Policy = "overkill",
    target: float = 0.05,
    val_fraction: float = 0.15,
    seed: int = 0,
    model_version: str | None = None,
    progress: ProgressFactory | None = None,
) -> TrainResult:
    split = calibration_split(dataset, val_fraction, seed)
    detector = detector_class(detector_name)(**(options or {}))
    fit_images = LazyImages(split.fit.paths)
    started = time.perf_counter()
    detector.fit(fit_images, progress=progress("fit", len(fit_images)) if progress else None)
    fit_seconds = time.perf_counter() - started

    good_scores = _scores(detector, split.good, progress, "calibrate on good")
    if policy == "overkill":
        calibration = calibrate_for_overkill(good_scores, target)
    else:
        if len(split.defective) == 0:
            raise ValueError("an escape-rate target needs labelled defective images (a val split or train defects)")
        defective_scores = _scores(detector, split.defective, progress, "calibrate on defective")
        calibration = calibrate_for_escape(good_scores, defective_scores, target)
    detector.calibration = calibration

    training = {
        "dataset": dataset.name,
        "fingerprint": split.fit.fingerprint(),
        "n_fit_images": len(split.fit),
        "n_calibration_good": len(split.good),
        "n_calibration_defective": len(split.defective) if policy == "escape" else 0,
        "calibration_fingerprint": split.good.fingerprint(),
        "fit_seconds": round(fit_seconds, 3),
        "seed": seed,
    }
    digest = save_model(out, detector, training=training, model_version=model_version)
    return TrainResult(detector, digest, fit_seconds, calibration, split)


def _scores(detector: Detector, data: Dataset, progress: ProgressFactory | None, step: str) -> np.ndarray:
    images = LazyImages(data.paths)
    advance = progress(step, len(images)) if progress else None
    scores = []
    batch = 32
    for start in range(0, len(images), batch):
        chunk = [images[i] for i in range(start, min(start + batch, len(images)))]
        raw, _ = detector.score_images(chunk)
        scores.append(raw)
        if advance:
            advance(len(chunk))
    return np.concatenate(scores) if scores else np.empty(0, dtype=np.float32)
