"""Ensemble of supervised models: the mean defect logit of several fine-tuned nets.

Why: on ELPV two seeds of the same end-to-end configuration differ as much as two configurations do
(validation AUROC 0.957 vs 0.969); averaging the logits of a few members removes part of that variance
(four GPU-trained members: 91.9% test accuracy against 91.0% for the best single one, AUROC 0.958 against
0.945; BENCHMARKS.md). The cost is inference time: one pass per member. Members differ by seed
(`fit_labelled`) or are model files trained apart, put together with `from_members`. Maps are the mean of
the members' maps (logit units, like the score); the defect class is the members' majority.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import torch

from cellsight.detectors.base import Detector, LabelledImages, ProgressCallback, ProgressFactory
from cellsight.detectors.registry import register
from cellsight.detectors.supervised import Supervised


@register
class SupervisedEnsemble(Detector):
    """`members` supervised models trained with seeds seed, seed + 1, ...; raw score = mean defect logit."""

    name = "ensemble"
    uses_labels = True

    def __init__(self, members: int = 3, supervised: dict[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__()
        if members < 1:
            raise ValueError(f"an ensemble needs at least one member, got {members}")
        self.n_members = members
        self.supervised = dict(supervised or {})
        self.seed = seed
        self.members: list[Supervised] = []

    def fit(self, images: Sequence[np.ndarray], progress: ProgressCallback | None = None) -> Self:
        raise ValueError("ensemble learns from labelled defects: use fit_labelled (cellsight train does)")

    def fit_labelled(
        self, train: LabelledImages, val: LabelledImages, progress: ProgressFactory | None = None
    ) -> Self:
        self.members = [
            Supervised(**{**self.supervised, "seed": self.seed + i}).fit_labelled(train, val, progress)
            for i in range(self.n_members)
        ]
        return self

    @classmethod
    def from_members(cls, members: Sequence[Supervised], seed: int = 0) -> Self:
        """An ensemble of already fitted models (for example trained on a GPU one by one); calibrate it after."""
        if not members:
            raise ValueError("an ensemble needs at least one member")
        classes = {tuple(m.defect_classes) for m in members}
        if len(classes) != 1 or any(m.net is None for m in members):
            raise ValueError("ensemble members must be fitted and know the same defect classes")
        ensemble = cls(members=len(members), seed=seed)
        ensemble.members = list(members)
        return ensemble

    def score_and_name(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray], list[str | None]]:
        """Mean logit, mean map and majority defect class over the members."""
        if not self.members:
            raise RuntimeError("ensemble is not fitted")
        outs = [member.score_and_name(images) for member in self.members]
        scores = np.mean([scores for scores, _, _ in outs], axis=0).astype(np.float32)
        maps = [np.mean([maps[i] for _, maps, _ in outs], axis=0).astype(np.float32) for i in range(len(images))]
        classes = [Counter(names[i] for _, _, names in outs).most_common(1)[0][0] for i in range(len(images))]
        return scores, maps, classes

    def score_images(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        scores, maps, _ = self.score_and_name(images)
        return scores, maps

    def config(self) -> dict[str, Any]:
        return {
            "members": [member.config() for member in self.members],
            "supervised": self.supervised,
            "seed": self.seed,
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"member{i}.{k}": v for i, m in enumerate(self.members) for k, v in m.tensors().items()}

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Self:
        members = []
        for i, member_config in enumerate(config["members"]):
            prefix = f"member{i}."
            part = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
            members.append(Supervised.from_state(member_config, part))
        detector = cls.from_members(members, seed=int(config["seed"]))
        detector.supervised = dict(config.get("supervised", {}))
        return detector
