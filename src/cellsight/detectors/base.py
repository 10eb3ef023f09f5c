"""The detector contract: typed settings in, `fit(training set)`, `score(images)`, a state for the model file.

scikit-learn's shape, for images: a detector is built from its settings (`DetectorSettings`, validated
once), learns from a `TrainingSet` whose labels are optional (each detector declares what it learns
from), and turns images into raw scores, raw maps and, where it can, defect classes (`Scores`). It never
holds a threshold of its own: a `Calibration` turns raw numbers into the normalised score (threshold =
0.5) and the verdict (`predict`), so the same fitted detector can be re-calibrated without refitting.

A new detector is one module (a `Detector` subclass with its `Settings`) plus one line registering it
(`cellsight.detectors.__init__`); the contract suite (`tests/unit/detectors/test_contract.py`) then
checks it like every other.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import ClassVar, Generic, Self, TypeVar, cast

import numpy as np
import torch
from pydantic import JsonValue

from cellsight.calibration.thresholds import Calibration
from cellsight.detectors.settings import DetectorSettings
from cellsight.errors import ConfigError, DataError, ModelFileError, NotFittedError
from cellsight.types import Prediction, Verdict

ProgressCallback = Callable[[int], None]
"""Called with the number of images just processed, so a CLI can advance its progress bar."""
ProgressFactory = Callable[[str, int], ProgressCallback]
"""Given a step description and its total, returns the callback that advances that step's bar."""

JsonObject = dict[str, JsonValue]
"""The JSON a detector writes into its model file (settings and learned values)."""
Tensors = dict[str, torch.Tensor]
"""The learned state as named tensors (stored with safetensors)."""


class LearnsFrom(StrEnum):
    """What a detector learns from; the train workflow builds the training set to match."""

    GOOD = "good"
    """Good images only; labelled defects in the training set are ignored."""
    GOOD_AND_DEFECT_NAMES = "good+names"
    """Good images for the model; labelled defects, where the set has them, only to name what it flags."""
    LABELLED = "labelled"
    """Good and defective images (both needed) and a held-out `validation` set of both."""


class MapSize(StrEnum):
    """Which anomaly maps `score` returns: none (fastest), the detector's working size, or each input's size."""

    NONE = "none"
    WORKING = "working"
    INPUT = "input"


class NotCalibratedError(NotFittedError):
    """A fitted detector without a threshold: calibrate it before predict."""


class LazySubset(Sequence[np.ndarray]):
    """Some items of an image sequence, read only when used (a lazy data set stays lazy)."""

    def __init__(self, items: Sequence[np.ndarray], index: Sequence[int]) -> None:
        self._items, self._index = items, list(index)

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]  # items, not slices
        return self._items[self._index[i]]


@dataclass(frozen=True)
class TrainingSet:
    """Images to learn from, with labels where known.

    `labels` are 0 (good) / 1 (defective); `defect_classes` are "good" for good images; `masks` holds, per
    image, a 2-D array (non-zero = defect) or None where no mask is known. Images and masks may be lazy
    sequences, read when the detector iterates. `validation` is a held-out labelled part (early stopping,
    combination weights) for detectors that learn from labels; the threshold is set elsewhere.
    """

    images: Sequence[np.ndarray]
    labels: Sequence[int]
    defect_classes: Sequence[str]
    masks: Sequence[np.ndarray | None]
    validation: TrainingSet | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if not len(self.labels) == len(self.defect_classes) == len(self.masks) == n:
            raise ValueError("images, labels, defect classes and masks must have the same length")

    @classmethod
    def good(cls, images: Sequence[np.ndarray]) -> TrainingSet:
        """Good images only: what a good-only detector needs."""
        n = len(images)
        return cls(images, [0] * n, ["good"] * n, [None] * n)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def good_images(self) -> Sequence[np.ndarray]:
        """The good images (lazily, in order)."""
        return LazySubset(self.images, [i for i, y in enumerate(self.labels) if y == 0])

    def defects(self) -> TrainingSet:
        """The labelled defective images, with their classes and masks (lazily, in order)."""
        index = [i for i, y in enumerate(self.labels) if y == 1]
        masks = cast(Sequence[np.ndarray | None], LazySubset(cast(Sequence[np.ndarray], self.masks), index))
        return TrainingSet(
            LazySubset(self.images, index), [1] * len(index), [self.defect_classes[i] for i in index], masks
        )

    @property
    def n_defective(self) -> int:
        return sum(1 for y in self.labels if y == 1)


@dataclass(frozen=True)
class Scores:
    """What `score` returns for a batch.

    `scores`: (N,) float32 raw image scores, higher = more anomalous. `maps`: raw anomaly maps on the same
    scale (None when `MapSize.NONE` was asked). `classes`: per image the defect class for images scored at
    or above `name_from` (None for the others), or None when the detector names no defects.
    """

    scores: np.ndarray
    maps: list[np.ndarray] | None = None
    classes: list[str | None] | None = None


@dataclass(frozen=True)
class BackboneExport:
    """What `cellsight.deploy` needs of a detector whose backbone can run as a verified ONNX graph."""

    module: torch.nn.Module
    """The torch module to export: a `features.graph.FeatureGraph` (pixels in, patch features out), or a
    bare backbone (normalised NCHW images in, feature levels out)."""
    image_size: int
    """The graph's static input side (square)."""
    probe_side: int
    """Side of the generated probe images used when no real ones are given (tiled: several tiles)."""
    use_torch: Callable[[], None]
    """Run the detector's backbone on TorchScript (the reference the graph is checked against)."""
    use_graph: Callable[[bytes], None]
    """Run the detector's backbone from exactly these ONNX bytes, on ONNX Runtime."""
    description: JsonObject
    """Backbone, layers, input and preprocessing, as written into deploy.json."""
    pixels: Callable[[Sequence[np.ndarray]], np.ndarray] | None = None
    """Images -> the graph's input as scoring builds it ((N, S, S, C) float32; tiles when tiling): what an
    int8 graph is calibrated on. None: the detector offers no int8 export."""


SettingsT = TypeVar("SettingsT", bound=DetectorSettings, covariant=True)


class Detector(ABC, Generic[SettingsT]):
    """Base class of every detector. Images are numpy arrays as `cellsight.data.images` reads them.

    Subclasses set `name`, `Settings` and `learns_from`, and implement `fit`, `score`, `fitted`,
    `fitted_config`, `tensors` and `restore`; `__init__` only stores the settings (devices, modes and
    other "auto" values are resolved in `fit`).
    """

    name: ClassVar[str]
    Settings: ClassVar[type[DetectorSettings]]
    learns_from: ClassVar[LearnsFrom] = LearnsFrom.GOOD

    def __init__(self, settings: SettingsT | None = None, /, **options: object) -> None:
        """`Detector(settings)` or `Detector(key=value, ...)`: keywords are validated by `Settings`."""
        if settings is not None and options:
            raise TypeError("give either a settings object or keyword settings, not both")
        if settings is not None and not isinstance(settings, self.Settings):
            raise ConfigError(f"{self.name} takes {self.Settings.__name__}, got {type(settings).__name__}")
        chosen = settings if settings is not None else self.Settings.from_options(options, self.name)
        self.settings: SettingsT = cast(SettingsT, chosen)
        self.calibration: Calibration | None = None

    # -- learning and scoring ----------------------------------------------------------------------
    @property
    @abstractmethod
    def fitted(self) -> bool:
        """True once `fit` (or `from_state`) has given the detector its learned state."""

    @abstractmethod
    def fit(self, train: TrainingSet, progress: ProgressFactory | None = None) -> Self:
        """Learn from `train` (what of it depends on `learns_from`); `progress` makes one bar per step."""

    @abstractmethod
    def score(
        self, images: Sequence[np.ndarray], maps: MapSize = MapSize.INPUT, name_from: float | None = None
    ) -> Scores:
        """Raw scores, the maps asked for, and defect classes for images scoring at least `name_from`
        (a raw score, usually the calibrated threshold; None names nothing)."""

    def cross_fit(
        self, train: TrainingSet, folds: Sequence[int], progress: ProgressFactory | None = None
    ) -> np.ndarray:
        """`fit` on all of `train`, and return each good image's raw score from a model fitted without its fold.

        `folds[i]` is the fold of the i-th good image. Those cross-fitted scores set a good-only detector's
        threshold without holding good images back from the final fit (a detector scores the images it was
        fitted on too low). This default refits a fresh detector per fold: k more fits; a detector that can
        reuse its features across folds overrides it (PatchCore does).
        """
        self.fit(train, progress)
        return refit_fold_scores(self, train.good_images, folds, progress)

    def cross_fit_method(self, folds: Sequence[int]) -> str:
        """How `cross_fit` scores the goods with these folds, in words for the user and the model file."""
        return f"{len(set(folds))} folds"

    def check_fitted(self) -> None:
        if not self.fitted:
            raise NotFittedError(f"{self.name} is not fitted: fit it (or load a model file) before scoring")

    # -- model file ----------------------------------------------------------------------------------
    @abstractmethod
    def fitted_config(self) -> JsonObject:
        """The learned values that are not tensors (JSON), stored beside the settings."""

    @abstractmethod
    def tensors(self) -> Tensors:
        """The learned state as named tensors."""

    @abstractmethod
    def restore(self, fitted: Mapping[str, JsonValue], tensors: Mapping[str, torch.Tensor]) -> None:
        """Set the learned state from `fitted_config()` and `tensors()` (or an older file's flat config)."""

    def config(self) -> JsonObject:
        """The model file's JSON for this detector: its settings and its learned values."""
        self.check_fitted()
        return {"settings": self.settings.to_json(), "state": self.fitted_config()}

    @classmethod
    def from_state(cls, config: Mapping[str, JsonValue], tensors: Mapping[str, torch.Tensor]) -> Self:
        """Rebuild a fitted detector from `config()` and `tensors()`; older files' flat configs migrate."""
        if "settings" in config:
            settings, fitted = config["settings"], config.get("state")
            if not isinstance(settings, dict) or not isinstance(fitted, dict):
                raise ModelFileError("config", f"{cls.name}: settings and state must be JSON objects")
            detector = cls(cast(SettingsT, cls.Settings.from_stored(settings)))
        else:  # written before typed settings: one flat config of settings and learned values
            detector = cls(cast(SettingsT, cls.Settings.migrate(config)))
            fitted = dict(config)
        detector.restore(fitted, tensors)
        return detector

    def backbone_export(self) -> BackboneExport | None:
        """How this detector's backbone exports to ONNX for a deployment; None: it does not export."""
        return None

    # -- inspection ------------------------------------------------------------------------------------
    def predict(self, images: Sequence[np.ndarray], maps: MapSize = MapSize.INPUT) -> list[Prediction]:
        """Normalised scores, verdicts, maps and defect classes for a batch; needs a calibration."""
        return predict_scored(self, images, maps)[0]


AnyDetector = Detector[DetectorSettings]
"""Any detector, whatever its settings (what the registry, the model file and the workflows handle)."""


def predict_scored(
    detector: AnyDetector, images: Sequence[np.ndarray], maps: MapSize = MapSize.INPUT
) -> tuple[list[Prediction], Scores]:
    """Predictions (NG ones named where the detector can) and the raw `Scores` behind them."""
    calibration = detector.calibration
    if calibration is None:
        raise NotCalibratedError(f"{detector.name} model has no calibration: calibrate it before predict")
    start = time.perf_counter()
    raw = detector.score(images, maps, name_from=calibration.threshold)
    predictions = make_predictions(calibration, raw.scores, raw.maps, 0.0)
    if raw.classes is not None:
        predictions = [
            replace(p, defect_class=c) if p.verdict is Verdict.NG and c else p
            for p, c in zip(predictions, raw.classes, strict=True)
        ]
    latency_ms = (time.perf_counter() - start) * 1000.0 / max(len(images), 1)
    return [replace(p, latency_ms=latency_ms) for p in predictions], raw


def make_predictions(
    calibration: Calibration,
    raw_scores: np.ndarray,
    raw_maps: Sequence[np.ndarray] | None,
    latency_ms: float,
) -> list[Prediction]:
    """Raw detector output -> normalised scores, maps and verdicts (NG when score >= 0.5)."""
    predictions = []
    for i, raw in enumerate(raw_scores):
        score = float(calibration.normalise(float(raw)))
        anomaly_map = None if raw_maps is None else np.asarray(calibration.normalise(raw_maps[i]), dtype=np.float32)
        predictions.append(
            Prediction(
                score=score,
                verdict=Verdict.NG if score >= 0.5 else Verdict.OK,
                raw_score=float(raw),
                defect_class="anomaly" if score >= 0.5 else None,
                anomaly_map=anomaly_map,
                latency_ms=latency_ms,
            )
        )
    return predictions


def fold_members(folds: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(held-out, fitting) indices per fold, folds in ascending order; each fold must leave images to fit on."""
    ids = np.asarray(folds, dtype=np.int64)
    out = [(np.flatnonzero(ids == fold), np.flatnonzero(ids != fold)) for fold in np.unique(ids)]
    if len(out) < 2:
        raise DataError(f"cross-fitting needs at least 2 folds, got {len(out)}")
    return out


def refit_fold_scores(
    detector: AnyDetector, goods: Sequence[np.ndarray], folds: Sequence[int],
    progress: ProgressFactory | None = None, batch: int = 32,
) -> np.ndarray:
    """Each good image's raw score from a fresh detector (same settings) fitted on the other folds."""
    if len(folds) != len(goods):
        raise ValueError(f"{len(folds)} fold ids for {len(goods)} good images")
    members = fold_members(folds)
    advance = progress("cross-fit", len(members)) if progress else None
    scores = np.empty(len(goods), dtype=np.float32)
    for held, rest in members:
        fold_model = type(detector)(detector.settings)
        fold_model.fit(TrainingSet.good(LazySubset(goods, rest.tolist())))
        for start in range(0, len(held), batch):
            part = held[start : start + batch]
            scores[part] = fold_model.score(LazySubset(goods, part.tolist()), MapSize.NONE).scores
        if advance:
            advance(1)
    return scores


def require_images(train: TrainingSet, name: str, minimum: int, what: str = "good") -> Sequence[np.ndarray]:
    """The training set's good images, or a `DataError` when there are fewer than `minimum`."""
    goods = train.good_images
    if len(goods) < minimum:
        raise DataError(f"{name} needs at least {minimum} {what} image(s) to fit, got {len(goods)}")
    return goods


def tensors_under(tensors: Mapping[str, torch.Tensor], prefix: str) -> Tensors:
    """The tensors whose names start with `prefix`, with it removed (a part of a composed detector)."""
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def json_object(value: JsonValue, what: str) -> Mapping[str, JsonValue]:
    """`value` as a JSON object, or a `ModelFileError` naming `what` (a model file's config part)."""
    if not isinstance(value, dict):
        raise ModelFileError("config", f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def json_float(fitted: Mapping[str, JsonValue], key: str) -> float:
    """A number from a model file's config, or a `ModelFileError` naming the key."""
    value = fitted.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ModelFileError("config", f"{key!r} must be a number, got {value!r}")
    return float(value)


def json_list(fitted: Mapping[str, JsonValue], key: str) -> list[JsonValue]:
    """A list from a model file's config, or a `ModelFileError` naming the key."""
    value = fitted.get(key)
    if not isinstance(value, list):
        raise ModelFileError("config", f"{key!r} must be a list, got {value!r}")
    return value
