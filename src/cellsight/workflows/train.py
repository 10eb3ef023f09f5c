"""Train a station's model: fit on good images, calibrate on held-out images, save one model file.

Calibration never uses the images the detector was fitted on (a memory bank scores its own images near
zero, which would set a threshold far too low). Where the data set has a `val` split it is used;
otherwise a seeded fraction of the good training images is held out.

Detectors that learn from defects (`uses_labels`) get the whole train split, goods and defects, minus a
seeded held-out part stratified by defect class; that part both stops their training early and sets
the threshold.

Good-only detectors that can name defects (`learns_defect_names`) still fit and calibrate on goods only;
where the train split has labelled defects, they then learn the defect classes' names from them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cellsight.calibration import Calibration, calibrate_for_escape, calibrate_for_overkill
from cellsight.data.dataset import GOOD, Dataset
from cellsight.data.images import LazyImages, read_image
from cellsight.detectors.base import Detector, LabelledImages, ProgressFactory
from cellsight.detectors.registry import detector_class
from cellsight.modelfile import save_model

Policy = Literal["overkill", "escape"]


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
    naming_examples: dict[str, int] = field(default_factory=dict)
    """Labelled train defects per class the detector learned defect names from (empty: it names none)."""


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


def labelled_split(dataset: Dataset, val_fraction: float, seed: int) -> CalibrationSplit:
    """Train split (goods and defects) for fitting, a stratified held-out part for stopping and threshold.

    A `val` split with goods and defects is used as is. Otherwise each defect class (and the goods)
    gives `val_fraction` of its images, at least one where the class has two or more.
    """
    train_part = dataset.select(split="train")
    if len(train_part.select(label=1)) == 0 or len(train_part.select(label=0)) == 0:
        raise ValueError(
            f"data set {dataset.name!r} needs good and defective images in its train split for a labelled detector"
        )
    val = dataset.select(split="val")
    if len(val.select(label=0)) > 0 and len(val.select(label=1)) > 0:
        return CalibrationSplit(train_part, val.select(label=0), val.select(label=1))
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    held: set[int] = set()
    items = train_part.items
    for name in sorted({item.defect_class for item in items}):
        members = [i for i, item in enumerate(items) if item.defect_class == name]
        n_val = max(1, round(len(members) * val_fraction)) if len(members) >= 2 else 0
        held.update(members[j] for j in rng.permutation(len(members))[:n_val].tolist())
    fit = Dataset(dataset.name, tuple(item for i, item in enumerate(items) if i not in held))
    heldout = Dataset(dataset.name, tuple(item for i, item in enumerate(items) if i in held))
    if len(heldout.select(label=1)) == 0 or len(fit.select(label=1)) == 0:
        raise ValueError(f"{len(train_part.select(label=1))} defective train images are too few to hold some out")
    return CalibrationSplit(fit, heldout.select(label=0), heldout.select(label=1))


class LazyMasks(Sequence["np.ndarray | None"]):
    """Masks read on use; None where an item has no mask."""

    def __init__(self, paths: Sequence[Path | None]) -> None:
        self._paths = list(paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, index: int) -> np.ndarray | None:  # type: ignore[override]
        path = self._paths[index]
        return None if path is None else read_image(path)


def labelled_images(data: Dataset) -> LabelledImages:
    """A data set as the lazy labelled images that `Detector.fit_labelled` takes."""
    return LabelledImages(
        LazyImages(data.paths), data.labels, [item.defect_class for item in data],
        LazyMasks([item.mask_path for item in data]),
    )


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
    cls = detector_class(detector_name)
    split = labelled_split(dataset, val_fraction, seed) if cls.uses_labels else calibration_split(
        dataset, val_fraction, seed
    )
    detector = cls(**(options or {}))
    started = time.perf_counter()
    if cls.uses_labels:
        val = Dataset(dataset.name, split.good.items + split.defective.items)
        detector.fit_labelled(labelled_images(split.fit), labelled_images(val), progress)
    else:
        fit_images = LazyImages(split.fit.paths)
        detector.fit(fit_images, progress=progress("fit", len(fit_images)) if progress else None)
    naming = _fit_defect_names(detector, dataset, progress) if cls.learns_defect_names else {}
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
        "n_fit_defective": len(split.fit.select(label=1)),
        "n_calibration_good": len(split.good),
        "n_calibration_defective": len(split.defective) if policy == "escape" else 0,
        "calibration_fingerprint": split.good.fingerprint(),
        "fit_seconds": round(fit_seconds, 3),
        "seed": seed,
    } | ({"naming_examples": naming} if naming else {})
    digest = save_model(out, detector, training=training, model_version=model_version)
    return TrainResult(detector, digest, fit_seconds, calibration, split, naming)


def _fit_defect_names(detector: Detector, dataset: Dataset, progress: ProgressFactory | None) -> dict[str, int]:
    """Teach a good-only detector the train split's defect classes; returns the examples used per class."""
    defects = dataset.select(split="train", label=1)
    if len(defects) == 0:
        return {}
    advance = progress("learn defect names", 1) if progress else None
    classes = [item.defect_class for item in defects]
    detector.fit_defect_names(LazyImages(defects.paths), classes, LazyMasks([item.mask_path for item in defects]))
    if advance:
        advance(1)
    return dict(sorted(Counter(classes).items()))


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
