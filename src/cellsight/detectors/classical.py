"""The rule-based baseline a plant runs today: golden template, difference, threshold, blob area.

Every parameter is set from good images only:
- each image is resized to the working size and normalised to zero mean and unit spread, so a brighter
  or dimmer camera does not trip the rule;
- the golden template is the per-pixel median of the good images, and the per-pixel tolerance their
  median absolute deviation (robust to a few odd good images), floored so flat regions do not explode;
- a pixel is suspicious when its deviation exceeds the template's tolerance by a factor chosen so that
  only `pixel_quantile` of good pixels exceed it; suspicious pixels are grouped into blobs;
- the minimum defect area is the largest blob seen on good images (times a margin), the classic
  "ignore specks smaller than X" setting.
The raw score is the largest blob's area in units of that minimum (>= 1 means the classic rule fires),
with the peak deviation as a tie-break below one unit, so the same rule also ranks images for ROC
curves and for calibration at a target overkill.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Self

import cv2
import numpy as np
import torch
from pydantic import Field, JsonValue

from cellsight.data.images import to_float01, to_gray
from cellsight.detectors.base import (
    Detector,
    JsonObject,
    LearnsFrom,
    MapSize,
    ProgressFactory,
    Scores,
    Tensors,
    TrainingSet,
    json_float,
    require_images,
)
from cellsight.detectors.settings import DetectorSettings


class ClassicalSettings(DetectorSettings):
    image_size: int = Field(256, ge=8, description="working side in pixels (images are resized to it)")
    blur_sigma: float = Field(1.5, ge=0.0, description="Gaussian blur before the difference (0: none)")
    pixel_quantile: float = Field(0.999, gt=0.0, le=1.0, description="share of good pixels under the pixel rule")
    area_margin: float = Field(1.2, gt=0.0, description="minimum defect area = largest good blob x margin")
    max_template_images: int = Field(500, ge=2, description="good images used for the template, at most")


class Classical(Detector[ClassicalSettings]):
    """Golden-template difference with a blob-area rule; fast, explainable, and weak on textured parts."""

    name = "classical"
    Settings = ClassicalSettings
    learns_from = LearnsFrom.GOOD

    def __init__(self, settings: ClassicalSettings | None = None, /, **options: object) -> None:
        super().__init__(settings, **options)
        self.template: np.ndarray | None = None
        self.tolerance: np.ndarray | None = None
        self.pixel_threshold = float("nan")
        self.min_area = float("nan")

    @property
    def fitted(self) -> bool:
        return self.template is not None

    def _normalise(self, image: np.ndarray) -> np.ndarray:
        size = self.settings.image_size
        gray = cv2.resize(to_float01(to_gray(image)), (size, size), interpolation=cv2.INTER_AREA)
        if self.settings.blur_sigma > 0:
            gray = cv2.GaussianBlur(gray, (0, 0), self.settings.blur_sigma)
        spread = float(gray.std())
        return (gray - float(gray.mean())) / (spread if spread > 1e-6 else 1.0)

    def fit(self, train: TrainingSet, progress: ProgressFactory | None = None) -> Self:
        # Template and rule halves: at least two images each.
        images = require_images(train, self.name, 4)
        advance = progress("fit", len(images)) if progress else None
        # Bounded memory: an evenly spread subset. The template comes from one half, the rule's
        # thresholds from the other, so tolerances are not measured on the images that made the template.
        step = max(1, len(images) // (2 * self.settings.max_template_images))
        stack = []
        for i in range(len(images)):
            if i % step == 0:
                stack.append(self._normalise(images[i]))
            if advance is not None:
                advance(1)
        template_part, rule_part = np.stack(stack[0::2]), np.stack(stack[1::2])
        self.template = np.median(template_part, axis=0).astype(np.float32)
        deviation = np.median(np.abs(template_part - self.template), axis=0) * 1.4826
        floor = max(float(np.median(deviation)) * 0.25, 1e-3)
        self.tolerance = np.maximum(deviation, floor).astype(np.float32)
        ratios = [self._ratio(image) for image in rule_part]
        self.pixel_threshold = float(np.quantile(np.stack(ratios), self.settings.pixel_quantile))
        self.min_area = 1.0
        largest = [float(self._score_map(r).max()) for r in ratios]  # in pixels while min_area is 1
        self.min_area = float(np.floor(max(largest)) * self.settings.area_margin + 1.0)
        return self

    def _ratio(self, normalised: np.ndarray) -> np.ndarray:
        assert self.template is not None and self.tolerance is not None
        return np.abs(normalised - self.template) / self.tolerance

    def _score_map(self, ratio: np.ndarray) -> np.ndarray:
        """Each pixel's blob area in units of the minimum defect area, plus a tie-break in [0, 1/min_area).

        Pixels outside every blob get only the tie-break (their deviation, squashed), so the map's
        maximum is the image score: largest blob first, then the sharpest deviation.
        """
        tie_break = (ratio / (ratio + self.pixel_threshold)) * (0.999 / self.min_area)
        mask = (ratio > self.pixel_threshold).astype(np.uint8)
        if not mask.any():
            return tie_break.astype(np.float32)
        _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        areas = stats[:, cv2.CC_STAT_AREA].astype(np.float32)
        areas[0] = 0.0  # background
        return (areas[labels] / self.min_area + tie_break).astype(np.float32)

    def score(
        self, images: Sequence[np.ndarray], maps: MapSize = MapSize.INPUT, name_from: float | None = None
    ) -> Scores:
        """Names no defects: every NG is "anomaly"."""
        self.check_fitted()
        scores = np.empty(len(images), dtype=np.float32)
        out: list[np.ndarray] = []
        for i, image in enumerate(images):
            score_map = self._score_map(self._ratio(self._normalise(image)))
            scores[i] = float(score_map.max())
            if maps is MapSize.INPUT:
                height, width = image.shape[:2]
                out.append(cv2.resize(score_map, (width, height), interpolation=cv2.INTER_NEAREST))
            elif maps is MapSize.WORKING:
                out.append(score_map)
        return Scores(scores, None if maps is MapSize.NONE else out)

    def fitted_config(self) -> JsonObject:
        return {"pixel_threshold": self.pixel_threshold, "min_area": self.min_area}

    def tensors(self) -> Tensors:
        self.check_fitted()
        assert self.template is not None and self.tolerance is not None
        return {"template": torch.from_numpy(self.template), "tolerance": torch.from_numpy(self.tolerance)}

    def restore(self, fitted: Mapping[str, JsonValue], tensors: Mapping[str, torch.Tensor]) -> None:
        self.pixel_threshold = json_float(fitted, "pixel_threshold")
        self.min_area = json_float(fitted, "min_area")
        self.template = tensors["template"].numpy()
        self.tolerance = tensors["tolerance"].numpy()
