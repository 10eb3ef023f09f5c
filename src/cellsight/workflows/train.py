"""Train a station's model: fit on good images, calibrate on held-out scores, save one model file.

Calibration never uses a score from a model fitted on that image (a memory bank scores its own images
near zero, which would set a threshold far too low). Where the data set has a `val` split it is used.
Otherwise a good-only detector is cross-fitted (`Detector.cross_fit`): the model is fitted on every
train good and the threshold is set on scores of each good from a model that did not see it. Small sets
lose no goods to a hold-out (15% of 37 images left 31 to fit). PatchCore leaves each image out of its one
bank (its rows excluded from the search): one search of every good patch beyond `fit`. Other good-only
detectors refit per fold (`TrainRequest.folds`, default 5: five more fits, cheap for the rule-based ones).
`folds=0` holds out a seeded `val_fraction` of the goods instead, as do labelled detectors.

What a detector is handed follows its `learns_from`:
- `LABELLED`: the whole train split, goods and defects, minus a seeded held-out part stratified by defect
  class (`TrainingSet.validation`); that part both stops their training early and sets the threshold;
- `GOOD_AND_DEFECT_NAMES`: the fitting goods plus the train split's labelled defects; the model learns
  from the goods and the defect classes' names from the defects (calibrated as a good-only detector);
- `GOOD`: the fitting goods only.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from cellsight.calibration import Calibration, calibrate_for_cost, calibrate_for_escape, calibrate_for_overkill
from cellsight.calibration.cost_model import CostTerms
from cellsight.data.dataset import GOOD, Dataset
from cellsight.data.images import LazyImages, read_image
from cellsight.detectors.base import AnyDetector, LearnsFrom, MapSize, ProgressFactory, TrainingSet
from cellsight.detectors.registry import detector_class
from cellsight.detectors.settings import DetectorSettings
from cellsight.errors import ConfigError, DataError
from cellsight.modelfile import save_model

Policy = Literal["overkill", "escape", "cost"]


@dataclass(frozen=True)
class TrainRequest:
    """Everything `train` needs besides the data and the output path; validated when built."""

    detector: str = "patchcore"
    settings: DetectorSettings | None = None
    """The detector's settings (its `Settings` class); None: its defaults."""
    policy: Policy = "overkill"
    target: float = 0.05
    """The overkill (or escape) rate the threshold is set for."""
    val_fraction: float = 0.15
    """Share held out to set the threshold (and stop labelled training) when the data has no val split and
    the goods are not cross-fitted (labelled detectors, or `folds=0`)."""
    folds: int = 5
    """No val split: cross-fit a good-only detector's threshold over this many folds (PatchCore leaves each
    image out instead, at no extra cost); 0: hold out `val_fraction` of the goods."""
    seed: int = 0
    """Seed of the held-out split (the detector's own seed is a setting)."""
    model_version: str | None = None
    station: str | None = None
    """The line station the model is for; recorded, and the service refuses it at another station."""
    costs: CostTerms | None = None
    """Policy "cost": the threshold with the least expected cost on the held-out images (target unused)."""

    def __post_init__(self) -> None:
        expected = detector_class(self.detector).Settings
        if self.settings is not None and not isinstance(self.settings, expected):
            raise ConfigError(f"{self.detector} takes {expected.__name__}, got {type(self.settings).__name__}")
        if self.policy not in ("overkill", "escape", "cost"):
            raise ConfigError(f"policy must be overkill, escape or cost, got {self.policy!r}")
        if (self.policy == "cost") != (self.costs is not None):
            raise ConfigError("the cost policy and cost terms go together (train --costs)")
        if not 0.0 < self.target < 1.0:
            raise ConfigError(f"target {self.policy} rate must be a fraction in (0, 1), got {self.target}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.folds == 1 or self.folds < 0:
            raise ConfigError(f"folds must be 0 (hold out val_fraction instead) or at least 2, got {self.folds}")

    @classmethod
    def with_options(cls, detector: str, options: Mapping[str, object], **request: object) -> TrainRequest:
        """A request whose settings come from loose key=value options (the CLI's `--option`), validated."""
        settings = detector_class(detector).Settings.from_options(options, detector)
        return cls(detector, settings, **request)  # type: ignore[arg-type]

    def build_detector(self) -> AnyDetector:
        cls = detector_class(self.detector)
        return cls(self.settings) if self.settings is not None else cls()


@dataclass(frozen=True)
class CalibrationSplit:
    fit: Dataset
    good: Dataset
    defective: Dataset
    folds: tuple[int, ...] | None = None
    """Cross-fitted: `good` is `fit`, and this is each good's fold; None: `good` is held out of `fit`."""


@dataclass(frozen=True)
class TrainResult:
    detector: AnyDetector
    content_hash: str
    fit_seconds: float
    calibration: Calibration
    split: CalibrationSplit
    naming_examples: dict[str, int] = field(default_factory=dict)
    """Labelled train defects per class the detector learned defect names from (empty: it names none)."""


def calibration_split(dataset: Dataset, val_fraction: float, seed: int, folds: int = 0) -> CalibrationSplit:
    """Which images fit the detector and which set its threshold (`folds` >= 2: all goods, cross-fitted)."""
    train_good = dataset.select(split="train", defect_class=GOOD)
    if len(train_good) == 0:
        raise DataError(f"data set {dataset.name!r} has no good images in its train split")
    val = dataset.select(split="val")
    if len(val.select(label=0)) > 0:
        return CalibrationSplit(train_good, val.select(label=0), val.select(label=1))
    if folds:
        return CalibrationSplit(train_good, train_good, dataset.select(split="train", label=1),
                                fold_ids(len(train_good), folds, seed))
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = max(1, round(len(train_good) * val_fraction))
    if n_val >= len(train_good):
        raise DataError(f"{len(train_good)} good training images are too few to hold out {n_val} for calibration")
    order = np.random.default_rng(seed).permutation(len(train_good))
    held = set(order[:n_val].tolist())
    items = train_good.items
    fit = Dataset(dataset.name, tuple(item for i, item in enumerate(items) if i not in held))
    good = Dataset(dataset.name, tuple(item for i, item in enumerate(items) if i in held))
    # Labelled defects in the train split are unused by a good-only fit: they may calibrate escapes.
    return CalibrationSplit(fit, good, dataset.select(split="train", label=1))


def fold_ids(n: int, folds: int, seed: int) -> tuple[int, ...]:
    """Each of `n` images' fold: a seeded permutation dealt round-robin into `min(folds, n)` folds of equal size."""
    if n < 2:
        raise DataError(f"{n} good training image is too few to cross-fit a threshold: add good images")
    k = min(folds, n)
    ids = np.empty(n, dtype=np.int64)
    ids[np.random.default_rng(seed).permutation(n)] = np.arange(n) % k
    return tuple(int(i) for i in ids)


def labelled_split(dataset: Dataset, val_fraction: float, seed: int) -> CalibrationSplit:
    """Train split (goods and defects) for fitting, a stratified held-out part for stopping and threshold.

    A `val` split with goods and defects is used as is. Otherwise each defect class (and the goods)
    gives `val_fraction` of its images, at least one where the class has two or more.
    """
    train_part = dataset.select(split="train")
    if len(train_part.select(label=1)) == 0 or len(train_part.select(label=0)) == 0:
        raise DataError(
            f"data set {dataset.name!r} needs good and defective images in its train split for a labelled detector"
        )
    val = dataset.select(split="val")
    if len(val.select(label=0)) > 0 and len(val.select(label=1)) > 0:
        return CalibrationSplit(train_part, val.select(label=0), val.select(label=1))
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
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
        raise DataError(f"{len(train_part.select(label=1))} defective train images are too few to hold some out")
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


def labelled_images(data: Dataset, validation: Dataset | None = None) -> TrainingSet:
    """A data set as a lazy training set (images and masks read on use), with its validation part."""
    return TrainingSet(
        LazyImages(data.paths), data.labels, [item.defect_class for item in data],
        LazyMasks([item.mask_path for item in data]),
        None if validation is None else labelled_images(validation),
    )


def training_set(learns_from: LearnsFrom, dataset: Dataset, split: CalibrationSplit) -> TrainingSet:
    """What a detector that learns from `learns_from` is handed (see the module's docstring)."""
    if learns_from is LearnsFrom.LABELLED:
        return labelled_images(split.fit, Dataset(dataset.name, split.good.items + split.defective.items))
    if learns_from is LearnsFrom.GOOD_AND_DEFECT_NAMES:
        defects = dataset.select(split="train", label=1)
        return labelled_images(Dataset(dataset.name, split.fit.items + defects.items))
    return TrainingSet.good(LazyImages(split.fit.paths))


def train(
    dataset: Dataset, out: Path, request: TrainRequest | None = None, progress: ProgressFactory | None = None,
    ray: str | None = None,
) -> TrainResult:
    """Fit the requested detector, calibrate it on held-out images, and write the model file to `out`.

    `ray`: a Ray address ("local" starts a cluster here) to run PatchCore's per-batch fitting stage on; the
    model is the same as without it. Other detectors refuse it (ConfigError) rather than ignore it.
    """
    request = request or TrainRequest()
    detector = request.build_detector()
    if ray is not None:
        if not hasattr(detector, "fit_map"):
            raise ConfigError(f"{request.detector} has no parallel fit: train it without --ray")
        from cellsight.inference.parallel_fit import ray_fit_map

        detector.fit_map = ray_fit_map(ray)
    labelled = detector.learns_from is LearnsFrom.LABELLED
    if labelled:
        split = labelled_split(dataset, request.val_fraction, request.seed)
    else:
        split = calibration_split(dataset, request.val_fraction, request.seed, request.folds)
    if request.policy in ("escape", "cost") and len(split.defective) == 0:
        raise DataError(f"an {request.policy} threshold needs labelled defective images (a val split or train defects)")
    train_set = training_set(detector.learns_from, dataset, split)
    started = time.perf_counter()
    if split.folds is not None:
        good_scores = detector.cross_fit(train_set, split.folds, progress)
    else:
        detector.fit(train_set, progress)
    fit_seconds = time.perf_counter() - started  # cross-fitted: the folds' fits too
    naming = {}
    if detector.learns_from is LearnsFrom.GOOD_AND_DEFECT_NAMES:
        naming = dict(sorted(Counter(train_set.defects().defect_classes).items()))

    if split.folds is None:
        good_scores = heldout_scores(detector, split.good, progress, "calibrate on good")
    if request.policy == "overkill":
        calibration = calibrate_for_overkill(good_scores, request.target)
    else:
        defective_scores = heldout_scores(detector, split.defective, progress, "calibrate on defective")
        if request.costs is not None:
            terms = request.costs
            calibration, _ = calibrate_for_cost(good_scores, defective_scores, terms.false_call, terms.escape,
                                                terms.defect_rate)
        else:
            calibration = calibrate_for_escape(good_scores, defective_scores, request.target)
    detector.calibration = calibration

    training = {
        "dataset": dataset.name,
        "fingerprint": split.fit.fingerprint(),
        "n_fit_images": len(split.fit),
        "n_fit_defective": len(split.fit.select(label=1)),
        "n_calibration_good": len(split.good),
        "n_calibration_defective": len(split.defective) if request.policy != "overkill" else 0,
        "calibration_fingerprint": split.good.fingerprint(),
        "fit_seconds": round(fit_seconds, 3),
        "seed": request.seed,
        "val_fraction": request.val_fraction,
    } | ({"naming_examples": naming} if naming else {}) | ({"station": request.station} if request.station else {}) | (
        {"cost_calibration": request.costs.to_dict()} if request.costs is not None else {})
    if split.folds is not None:  # the fitted model cannot score its own goods again: keep what set the threshold
        training |= {"folds": max(split.folds) + 1, "cross_fit": detector.cross_fit_method(split.folds),
                     "cross_fit_good_scores": [float(v) for v in good_scores]}
    digest = save_model(out, detector, training=training, model_version=request.model_version)
    return TrainResult(detector, digest, fit_seconds, calibration, split, naming)


def heldout_scores(detector: AnyDetector, data: Dataset, progress: ProgressFactory | None, step: str) -> np.ndarray:
    """Raw scores of a held-out part, in batches, with a progress bar."""
    images = LazyImages(data.paths)
    advance = progress(step, len(images)) if progress else None
    scores = []
    batch = 32
    for start in range(0, len(images), batch):
        chunk = [images[i] for i in range(start, min(start + batch, len(images)))]
        scores.append(detector.score(chunk, MapSize.NONE).scores)
        if advance:
            advance(len(chunk))
    return np.concatenate(scores) if scores else np.empty(0, dtype=np.float32)
