"""Hybrid detector: good-only PatchCore and the supervised model, combined by weights learned on validation.

Why: with few labelled defects the supervised model knows only the defects it has seen, while PatchCore
flags anything unusual. Each gives one number per image; a logistic regression on the held-out
validation split, on [PatchCore score standardised on the validation goods, supervised logit], learns
how much to trust each. Two weights and a bias: little to overfit, and the raw score stays a logit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from cellsight.detectors.base import Detector, LabelledImages, ProgressCallback, ProgressFactory
from cellsight.detectors.patchcore import PatchCore
from cellsight.detectors.registry import register
from cellsight.detectors.supervised import Supervised


@register
class Hybrid(Detector):
    """Logistic combination of a fitted PatchCore (fit on the goods) and a fitted supervised model."""

    name = "hybrid"
    uses_labels = True

    def __init__(
        self, patchcore: dict[str, Any] | None = None, supervised: dict[str, Any] | None = None, seed: int = 0
    ) -> None:
        super().__init__()
        self.patchcore = PatchCore(**{"seed": seed, **(patchcore or {})})
        self.supervised = Supervised(**{"seed": seed, **(supervised or {})})
        self.seed = seed
        self.combination = np.zeros(5, dtype=np.float64)  # w_patchcore, w_supervised, bias, mean, std
        self.fitted = False

    def fit(self, images: Sequence[np.ndarray], progress: ProgressCallback | None = None) -> Self:
        raise ValueError("hybrid learns from labelled defects: use fit_labelled (cellsight train does)")

    def fit_labelled(
        self, train: LabelledImages, val: LabelledImages, progress: ProgressFactory | None = None
    ) -> Self:
        goods = [i for i, y in enumerate(train.labels) if y == 0]
        self.patchcore.fit(
            _Subset(train.images, goods), progress("fit patchcore", len(goods)) if progress else None
        )
        self.supervised.fit_labelled(train, val, progress)
        pc, _ = self.patchcore.score_images(val.images)
        sup, _ = self.supervised.score_images(val.images)
        return self.combine(pc, sup, np.asarray(val.labels))

    def combine(self, patchcore_scores: np.ndarray, supervised_logits: np.ndarray, labels: np.ndarray) -> Self:
        """Learn the combination from validation scores of the two fitted parts."""
        if len(set(labels.tolist())) < 2:
            raise ValueError("hybrid needs good and defective images in the validation split")
        good = patchcore_scores[labels == 0]
        mean, std = float(good.mean()), float(good.std()) or 1.0
        features = np.stack([(patchcore_scores - mean) / std, supervised_logits], axis=1)
        model = LogisticRegression(class_weight="balanced", C=1.0).fit(features, labels)
        self.combination = np.array([*model.coef_[0], model.intercept_[0], mean, std], dtype=np.float64)
        self.fitted = True
        return self

    def combine_scores(self, patchcore_scores: np.ndarray, supervised_logits: np.ndarray) -> np.ndarray:
        w_pc, w_sup, bias, mean, std = self.combination
        return (w_pc * (patchcore_scores - mean) / std + w_sup * supervised_logits + bias).astype(np.float32)

    def score_images(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        scores, maps, _ = self.score_and_name(images)
        return scores, maps

    def score_and_name(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray], list[str | None]]:
        """Combined scores and maps; the defect class from the supervised part's class head."""
        if not self.fitted:
            raise RuntimeError("hybrid is not fitted")
        pc, pc_maps = self.patchcore.score_images(images)
        sup, sup_maps, classes = self.supervised.score_and_name(images)
        maps = [self.combine_scores(a, b) for a, b in zip(pc_maps, sup_maps, strict=True)]
        return self.combine_scores(pc, sup), maps, classes

    def config(self) -> dict[str, Any]:
        names = ("w_patchcore", "w_supervised", "bias", "patchcore_mean", "patchcore_std")
        return {
            "patchcore": self.patchcore.config(),
            "supervised": self.supervised.config(),
            "seed": self.seed,
            "combination": dict(zip(names, self.combination.tolist(), strict=True)),
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"patchcore.{k}": v for k, v in self.patchcore.tensors().items()}
        out.update({f"supervised.{k}": v for k, v in self.supervised.tensors().items()})
        out["combination"] = torch.from_numpy(self.combination.copy())
        return out

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Self:
        detector = cls(seed=int(config["seed"]))

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}

        detector.patchcore = PatchCore.from_state(config["patchcore"], part("patchcore."))
        detector.supervised = Supervised.from_state(config["supervised"], part("supervised."))
        detector.combination = tensors["combination"].numpy().astype(np.float64)
        detector.fitted = True
        return detector


class _Subset(Sequence[np.ndarray]):
    """A lazy view of some items of an image sequence (images are read only when used)."""

    def __init__(self, images: Sequence[np.ndarray], index: Sequence[int]) -> None:
        self._images, self._positions = images, list(index)

    def __len__(self) -> int:
        return len(self._positions)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        return self._images[self._positions[i]]
