"""Ensemble of supervised models: the mean defect logit of several fine-tuned nets.

Why: on ELPV two seeds of the same end-to-end configuration differ as much as two configurations do
(validation AUROC 0.957 vs 0.969); averaging the logits of a few members removes part of that variance
(four GPU-trained members: 91.9% test accuracy against 91.0% for the best single one, AUROC 0.958 against
0.945; BENCHMARKS.md). The cost is inference time: one pass per member. Members differ by seed (`fit`)
or are model files trained apart, put together with `from_members`. Maps are the mean of the members'
maps (logit units, like the score); the defect class is the members' majority.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Self

import cv2
import numpy as np
import torch
from pydantic import Field, JsonValue

from cellsight.detectors.base import (
    Detector,
    JsonObject,
    LearnsFrom,
    MapSize,
    ProgressFactory,
    Scores,
    Tensors,
    TrainingSet,
    json_list,
    json_object,
    tensors_under,
)
from cellsight.detectors.settings import DetectorSettings
from cellsight.detectors.supervised.detector import Supervised
from cellsight.detectors.supervised.settings import SupervisedSettings
from cellsight.errors import ConfigError


class EnsembleSettings(DetectorSettings):
    """`members` supervised models with `supervised`'s settings and seeds seed, seed + 1, ..."""

    members: int = Field(3, ge=1)
    supervised: SupervisedSettings = SupervisedSettings()
    seed: int = 0

    @classmethod
    def migrate(cls, config: Mapping[str, JsonValue]) -> Self:
        """Files before typed settings held the members' configs and the options they were trained with."""
        members = json_list(config, "members")
        supervised = SupervisedSettings.from_options(json_object(config.get("supervised", {}), "supervised"))
        return cls(members=len(members), supervised=supervised, seed=int(str(config.get("seed", 0))))


class SupervisedEnsemble(Detector[EnsembleSettings]):
    """Raw score = the members' mean defect logit."""

    name = "ensemble"
    Settings = EnsembleSettings
    learns_from = LearnsFrom.LABELLED

    def __init__(self, settings: EnsembleSettings | None = None, /, **options: object) -> None:
        super().__init__(settings, **options)
        self.members: list[Supervised] = []

    @property
    def fitted(self) -> bool:
        return bool(self.members)

    def fit(self, train: TrainingSet, progress: ProgressFactory | None = None) -> Self:
        s = self.settings
        self.members = [
            Supervised(s.supervised.model_copy(update={"seed": s.seed + i})).fit(train, progress)
            for i in range(s.members)
        ]
        return self

    @classmethod
    def from_members(cls, members: Sequence[Supervised], seed: int = 0) -> Self:
        """An ensemble of already fitted models (for example trained on a GPU one by one); calibrate it after."""
        if not members:
            raise ConfigError("an ensemble needs at least one member")
        classes = {tuple(m.defect_classes) for m in members}
        if len(classes) != 1 or not all(m.fitted for m in members):
            raise ConfigError("ensemble members must be fitted and know the same defect classes")
        ensemble = cls(members=len(members), seed=seed)
        ensemble.members = list(members)
        return ensemble

    def score(
        self, images: Sequence[np.ndarray], maps: MapSize = MapSize.INPUT, name_from: float | None = None
    ) -> Scores:
        """Mean logit, mean map and the members' majority defect class."""
        self.check_fitted()
        outs = [member.score(images, maps, name_from=-np.inf) for member in self.members]
        scores = np.mean([out.scores for out in outs], axis=0).astype(np.float32)
        merged = None
        if maps is not MapSize.NONE:
            merged = [_mean_map([out.maps[i] for out in outs if out.maps is not None]) for i in range(len(images))]
        classes = None
        if name_from is not None:
            votes = [Counter(out.classes[i] for out in outs if out.classes is not None) for i in range(len(images))]
            classes = [
                vote.most_common(1)[0][0] if float(score) >= name_from else None
                for vote, score in zip(votes, scores, strict=True)
            ]
        return Scores(scores, merged, classes)

    # -- model file ------------------------------------------------------------------------------------
    def fitted_config(self) -> JsonObject:
        """Each member's whole config: members trained apart may differ in their settings."""
        return {"members": [member.config() for member in self.members]}

    def tensors(self) -> Tensors:
        return {f"member{i}.{k}": v for i, m in enumerate(self.members) for k, v in m.tensors().items()}

    def restore(self, fitted: Mapping[str, JsonValue], tensors: Mapping[str, torch.Tensor]) -> None:
        self.members = [
            Supervised.from_state(json_object(member, f"member {i}"), tensors_under(tensors, f"member{i}."))
            for i, member in enumerate(json_list(fitted, "members"))
        ]


def _mean_map(maps: list[np.ndarray]) -> np.ndarray:
    """The members' mean map, at the first member's size (members trained apart may work at other sizes)."""
    height, width = maps[0].shape[:2]
    same = [m if m.shape == maps[0].shape else cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR)
            for m in maps]
    return np.mean(same, axis=0).astype(np.float32)
