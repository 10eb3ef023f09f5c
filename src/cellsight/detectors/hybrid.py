"""Hybrid detector: good-only PatchCore and the supervised model, combined by weights learned on validation.

Why: with few labelled defects the supervised model knows only the defects it has seen, while PatchCore
flags anything unusual. Each gives one number per image; a logistic regression on the held-out
validation split, on [PatchCore score standardised on the validation goods, supervised logit], learns
how much to trust each. Two weights and a bias: little to overfit, and the raw score stays a logit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Self

import cv2
import numpy as np
import torch
from pydantic import JsonValue, model_validator
from sklearn.linear_model import LogisticRegression

from cellsight.detectors.base import (
    Detector,
    JsonObject,
    LearnsFrom,
    MapSize,
    ProgressFactory,
    Scores,
    Tensors,
    TrainingSet,
    json_object,
    tensors_under,
)
from cellsight.detectors.patchcore import PatchCore, PatchCoreSettings
from cellsight.detectors.settings import DetectorSettings
from cellsight.detectors.supervised import Supervised, SupervisedSettings
from cellsight.errors import DataError

COMBINATION = ("w_patchcore", "w_supervised", "bias", "patchcore_mean", "patchcore_std")


class HybridSettings(DetectorSettings):
    """The two parts' settings; a part that sets no seed of its own takes the hybrid's."""

    patchcore: PatchCoreSettings = PatchCoreSettings()
    supervised: SupervisedSettings = SupervisedSettings()
    seed: int = 0

    @model_validator(mode="after")
    def _seed_parts(self) -> Self:
        update = {
            name: part.model_copy(update={"seed": self.seed})
            for name, part in (("patchcore", self.patchcore), ("supervised", self.supervised))
            if "seed" not in part.model_fields_set
        }
        return self.model_copy(update=update) if update else self

    @classmethod
    def migrate(cls, config: Mapping[str, JsonValue]) -> Self:
        """Files before typed settings held each part's flat config."""
        patchcore = PatchCoreSettings.migrate(json_object(config.get("patchcore"), "patchcore"))
        supervised = SupervisedSettings.migrate(json_object(config.get("supervised"), "supervised"))
        return cls(patchcore=patchcore, supervised=supervised, seed=int(str(config.get("seed", 0))))


class Hybrid(Detector[HybridSettings]):
    """Logistic combination of a fitted PatchCore (fit on the goods) and a fitted supervised model."""

    name = "hybrid"
    Settings = HybridSettings
    learns_from = LearnsFrom.LABELLED

    def __init__(self, settings: HybridSettings | None = None, /, **options: object) -> None:
        super().__init__(settings, **options)
        self.patchcore = PatchCore(self.settings.patchcore)
        self.supervised = Supervised(self.settings.supervised)
        self.combination = np.zeros(5, dtype=np.float64)  # w_patchcore, w_supervised, bias, mean, std
        self._combined = False

    @property
    def fitted(self) -> bool:
        return self._combined

    def fit(self, train: TrainingSet, progress: ProgressFactory | None = None) -> Self:
        """PatchCore on the goods, the supervised part on everything, the combination on `train.validation`."""
        val = train.validation
        if val is None:
            raise DataError(f"{self.name} needs a validation set with good and defective images")
        part_progress = None if progress is None else (lambda step, n: progress(f"patchcore: {step}", n))
        self.patchcore.fit(TrainingSet.good(train.good_images), part_progress)
        self.supervised.fit(train, progress)
        self.settings = self.settings.model_copy(update={"supervised": self.supervised.settings})
        pc = self.patchcore.score(val.images, MapSize.NONE).scores
        sup = self.supervised.score(val.images, MapSize.NONE).scores
        return self.combine(pc, sup, np.asarray(val.labels))

    def combine(self, patchcore_scores: np.ndarray, supervised_logits: np.ndarray, labels: np.ndarray) -> Self:
        """Learn the combination from validation scores of the two fitted parts."""
        if len(set(labels.tolist())) < 2:
            raise DataError("hybrid needs good and defective images in the validation split")
        good = patchcore_scores[labels == 0]
        mean, std = float(good.mean()), float(good.std()) or 1.0
        features = np.stack([(patchcore_scores - mean) / std, supervised_logits], axis=1)
        model = LogisticRegression(class_weight="balanced", C=1.0).fit(features, labels)
        self.combination = np.array([*model.coef_[0], model.intercept_[0], mean, std], dtype=np.float64)
        self._combined = True
        return self

    def combine_scores(self, patchcore_scores: np.ndarray, supervised_logits: np.ndarray) -> np.ndarray:
        w_pc, w_sup, bias, mean, std = self.combination
        return (w_pc * (patchcore_scores - mean) / std + w_sup * supervised_logits + bias).astype(np.float32)

    def score(
        self, images: Sequence[np.ndarray], maps: MapSize = MapSize.INPUT, name_from: float | None = None
    ) -> Scores:
        """Combined scores and maps (working size: PatchCore's); the defect class from the supervised part's
        class head."""
        self.check_fitted()
        pc = self.patchcore.score(images, maps)
        sup = self.supervised.score(images, maps, name_from=-np.inf)
        scores = self.combine_scores(pc.scores, sup.scores)
        combined = None
        if pc.maps is not None and sup.maps is not None:
            combined = [self.combine_scores(a, _resized(b, a.shape)) for a, b in zip(pc.maps, sup.maps, strict=True)]
        classes = None
        if name_from is not None and sup.classes is not None:
            classes = [c if float(s) >= name_from else None for c, s in zip(sup.classes, scores, strict=True)]
        return Scores(scores, combined, classes)

    # -- model file ------------------------------------------------------------------------------------
    def fitted_config(self) -> JsonObject:
        return {
            "patchcore": self.patchcore.fitted_config(),
            "supervised": self.supervised.fitted_config(),
            "combination": dict(zip(COMBINATION, self.combination.tolist(), strict=True)),
        }

    def tensors(self) -> Tensors:
        out = {f"patchcore.{k}": v for k, v in self.patchcore.tensors().items()}
        out.update({f"supervised.{k}": v for k, v in self.supervised.tensors().items()})
        out["combination"] = torch.from_numpy(self.combination.copy())
        return out

    def restore(self, fitted: Mapping[str, JsonValue], tensors: Mapping[str, torch.Tensor]) -> None:
        self.patchcore.restore(json_object(fitted.get("patchcore"), "patchcore"), tensors_under(tensors, "patchcore."))
        self.supervised.restore(
            json_object(fitted.get("supervised"), "supervised"), tensors_under(tensors, "supervised.")
        )
        self.combination = tensors["combination"].numpy().astype(np.float64)
        self._combined = True


def _resized(image_map: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`image_map` at `shape` (the supervised part's working-size map is coarser than PatchCore's)."""
    if image_map.shape == shape:
        return image_map
    return cv2.resize(image_map, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
