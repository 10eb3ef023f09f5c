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

from collections.abc import Sequence
from typing import Any, Self

import cv2
import numpy as np
import torch

from cellsight.data.images import to_float01, to_gray
from cellsight.detectors.base import Detector, ProgressCallback
from cellsight.detectors.registry import register


@register
class Classical(Detector):
    """Golden-template difference with a blob-area rule; fast, explainable, and weak on textured parts."""

    name = "classical"

    def __init__(
        self,
        image_size: int = 256,
        blur_sigma: float = 1.5,
        pixel_quantile: float = 0.999,
        area_margin: float = 1.2,
        max_template_images: int = 500,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.blur_sigma = blur_sigma
        self.pixel_quantile = pixel_quantile
        self.area_margin = area_margin
        self.max_template_images = max_template_images
        self.template: np.ndarray | None = None
        self.tolerance: np.ndarray | None = None
        self.pixel_threshold = float("nan")
        self.min_area = float("nan")

    def _normalise(self, image: np.ndarray) -> np.ndarray:
        size = self.image_size
        gray = cv2.resize(to_float01(to_gray(image)), (size, size), interpolation=cv2.INTER_AREA)
        if self.blur_sigma > 0:
            gray = cv2.GaussianBlur(gray, (0, 0), self.blur_sigma)
        spread = float(gray.std())
        return (gray - float(gray.mean())) / (spread if spread > 1e-6 else 1.0)

    def fit(self, images: Sequence[np.ndarray], progress: ProgressCallback | None = None) -> Self:
        if len(images) < 4:
            raise ValueError("the classical detector needs at least 4 good images (template and rule halves)")
        # Bounded memory: an evenly spread subset. The template comes from one half, the rule's
        # thresholds from the other, so tolerances are not measured on the images that made the template.
        step = max(1, len(images) // (2 * self.max_template_images))
        stack = []
        for i in range(len(images)):
            if i % step == 0:
                stack.append(self._normalise(images[i]))
            if progress is not None:
                progress(1)
        template_part, rule_part = np.stack(stack[0::2]), np.stack(stack[1::2])
        self.template = np.median(template_part, axis=0).astype(np.float32)
        deviation = np.median(np.abs(template_part - self.template), axis=0) * 1.4826
        floor = max(float(np.median(deviation)) * 0.25, 1e-3)
        self.tolerance = np.maximum(deviation, floor).astype(np.float32)
        ratios = [self._ratio(image) for image in rule_part]
        self.pixel_threshold = float(np.quantile(np.stack(ratios), self.pixel_quantile))
        self.min_area = 1.0
        largest = [float(self._score_map(r).max()) for r in ratios]  # in pixels while min_area is 1
        self.min_area = float(np.floor(max(largest)) * self.area_margin + 1.0)
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

    def score_images(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        if self.template is None:
            raise RuntimeError("classical detector is not fitted")
        scores = np.empty(len(images), dtype=np.float32)
        maps = []
        for i, image in enumerate(images):
            score_map = self._score_map(self._ratio(self._normalise(image)))
            scores[i] = float(score_map.max())
            height, width = image.shape[:2]
            maps.append(cv2.resize(score_map, (width, height), interpolation=cv2.INTER_NEAREST))
        return scores, maps

    def config(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "blur_sigma": self.blur_sigma,
            "pixel_quantile": self.pixel_quantile,
            "area_margin": self.area_margin,
            "max_template_images": self.max_template_images,
            "pixel_threshold": self.pixel_threshold,
            "min_area": self.min_area,
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        if self.template is None or self.tolerance is None:
            raise RuntimeError("classical detector is not fitted")
        return {"template": torch.from_numpy(self.template), "tolerance": torch.from_numpy(self.tolerance)}

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Self:
        detector = cls(
            image_size=int(config["image_size"]),
            blur_sigma=float(config["blur_sigma"]),
            pixel_quantile=float(config["pixel_quantile"]),
            area_margin=float(config["area_margin"]),
            max_template_images=int(config["max_template_images"]),
        )
        detector.pixel_threshold = float(config["pixel_threshold"])
        detector.min_area = float(config["min_area"])
        detector.template = tensors["template"].numpy()
        detector.tolerance = tensors["tolerance"].numpy()
        return detector
