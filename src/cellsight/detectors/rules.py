"""A fair rule-based baseline: what a plant's vision engineer sets up from good images, without deep learning.

`classical` is the bare golden-template rule; this is the careful version, so that "traditional vs deep"
is measured against a baseline a competent engineer would actually deploy:
- **registration**: every image is aligned to the golden image by phase correlation (sub-pixel
  translation), so fixture play does not read as a defect;
- **per-pixel tolerance**: mean and spread of the registered good images, pixel by pixel (an edge may
  vary more than a flat face), the spread floored so flat regions do not explode;
- **region masks**: pixels whose good variation is far above the typical (labels, edges that move,
  the border uncovered by registration) are masked out automatically; `ignore_boxes` masks more by hand;
- **blob analysis with area and contrast rules**: pixels beyond the tolerance form blobs; a blob is a
  defect when it is both large enough and contrasted enough, both limits learned from good images held
  out of the template.
The raw score is, over the blobs, the weaker of the two rules' margins (area / minimum area, contrast /
minimum contrast): >= 1 means both rules fire. Images keep their aspect ratio (the working width follows
the first good image's shape). Colour images are judged in grey, as most rule-based stations do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Self

import cv2
import numpy as np
import torch
from pydantic import Field, JsonValue, field_validator

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
from cellsight.detectors.ignore import Box, check_boxes
from cellsight.detectors.settings import DetectorSettings


class RulesSettings(DetectorSettings):
    image_size: int = Field(256, ge=16, description="working size of the longer side (aspect kept)")
    registration: Literal["phase", "none"] = "phase"
    max_shift: float = Field(0.1, ge=0.0, lt=0.5, description="largest alignment shift, fraction of the side")
    blur_sigma: float = Field(1.0, ge=0.0)
    pixel_quantile: float = Field(0.999, gt=0.0, lt=1.0, description="share of good pixels within tolerance")
    rule_quantile: float = Field(0.95, gt=0.0, le=1.0, description="share of good images no blob rule fires on")
    mask_spread: float = Field(4.0, gt=1.0, description="mask pixels whose good spread exceeds this x the median")
    max_template_images: int = Field(400, ge=2)
    ignore_boxes: tuple[Box, ...] = ()

    @field_validator("ignore_boxes")
    @classmethod
    def _boxes(cls, boxes: tuple[Box, ...]) -> tuple[Box, ...]:
        return check_boxes(boxes)


class Rules(Detector[RulesSettings]):
    """Registered golden template, per-pixel tolerance, region masks and blob rules (area and contrast)."""

    name = "rules"
    Settings = RulesSettings
    learns_from = LearnsFrom.GOOD

    def __init__(self, settings: RulesSettings | None = None, /, **options: object) -> None:
        super().__init__(settings, **options)
        self.mean: np.ndarray | None = None
        self.spread: np.ndarray | None = None
        self.mask: np.ndarray | None = None  # 1 where judged, 0 where masked out
        self.pixel_limit = float("nan")
        self.min_area = float("nan")
        self.min_contrast = float("nan")

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    # -- preprocessing ---------------------------------------------------------------------------------
    def _shape(self, image: np.ndarray) -> tuple[int, int]:
        """(height, width) at the working size, aspect of `image` kept."""
        height, width = image.shape[:2]
        side = self.settings.image_size
        scale = side / max(height, width)
        return max(8, round(height * scale)), max(8, round(width * scale))

    def _gray(self, image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        gray = cv2.resize(to_float01(to_gray(image)), (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
        if self.settings.blur_sigma > 0:
            gray = cv2.GaussianBlur(gray, (0, 0), self.settings.blur_sigma)
        spread = float(gray.std())  # brightness and gain of the camera are not defects
        return ((gray - float(gray.mean())) / (spread if spread > 1e-6 else 1.0)).astype(np.float32)

    def _register(self, gray: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`gray` shifted onto `reference`, and the map of pixels it still covers (1) after the shift."""
        covered = np.ones_like(gray)
        if self.settings.registration == "none":
            return gray, covered
        window = cv2.createHanningWindow((gray.shape[1], gray.shape[0]), cv2.CV_32F)
        # copies: OpenCV 5's phaseCorrelate windows its float32 inputs in place
        (dx, dy), _ = cv2.phaseCorrelate(reference.copy(), gray.copy(), window)
        limit = self.settings.max_shift * max(gray.shape)
        if not (abs(dx) <= limit and abs(dy) <= limit):
            return gray, covered  # implausible: keep the image as it is (a defect may have fooled it)
        move = np.array([[1, 0, -dx], [0, 1, -dy]], dtype=np.float32)
        size = (gray.shape[1], gray.shape[0])
        aligned = cv2.warpAffine(gray, move, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        covered = cv2.warpAffine(covered, move, size, flags=cv2.INTER_NEAREST, borderValue=0.0)
        return aligned, covered

    # -- fitting ---------------------------------------------------------------------------------------
    def fit(self, train: TrainingSet, progress: ProgressFactory | None = None) -> Self:
        """Template and tolerance from one half of the goods, the blob rules' limits from the other."""
        images = require_images(train, self.name, 4)
        advance = progress("fit", len(images)) if progress else None
        step = max(1, len(images) // (2 * self.settings.max_template_images))
        shape = self._shape(images[0])
        grays = []
        for i in range(len(images)):
            if i % step == 0:
                grays.append(self._gray(images[i], shape))
            if advance is not None:
                advance(1)
        golden = np.median(np.stack(grays[0::2]), axis=0).astype(np.float32)
        aligned = [self._register(g, golden) for g in grays]
        template = np.stack([a for a, _ in aligned[0::2]])
        self.mean = template.mean(axis=0).astype(np.float32)
        spread = template.std(axis=0)
        typical = float(np.median(spread))
        self.spread = np.maximum(spread, max(0.5 * typical, 1e-3)).astype(np.float32)
        self.mask = (spread <= self.settings.mask_spread * max(typical, 1e-6)).astype(np.float32)
        self.mask *= np.min(np.stack([c for _, c in aligned]), axis=0)  # never judge an uncovered border
        self.mask *= _outside(shape, self.settings.ignore_boxes)
        held_out = [self._deviation(a, c) for a, c in aligned[1::2]]
        self.pixel_limit = float(np.quantile(np.stack(held_out), self.settings.pixel_quantile))
        self.min_area, self.min_contrast = 1.0, 1.0
        largest = np.array([self._blob_rules(d)[:2] for d in held_out])  # per image: (max area, max contrast)
        q = self.settings.rule_quantile
        self.min_area = float(max(np.quantile(largest[:, 0], q), 1.0)) + 1.0
        self.min_contrast = float(max(np.quantile(largest[:, 1], q), self.pixel_limit)) * 1.05
        return self

    def _deviation(self, aligned: np.ndarray, covered: np.ndarray) -> np.ndarray:
        """Deviation from the template in units of each pixel's tolerance, zero where masked."""
        assert self.mean is not None and self.spread is not None and self.mask is not None
        return (np.abs(aligned - self.mean) / self.spread * self.mask * covered).astype(np.float32)

    def _blob_rules(self, deviation: np.ndarray) -> tuple[float, float, float]:
        """(largest blob area, highest blob contrast, score): the score is, over blobs, the weaker rule's
        margin; without blobs, the peak deviation as a fraction of the pixel limit, scaled below any blob."""
        suspicious = (deviation > self.pixel_limit).astype(np.uint8)
        below = float(deviation.max()) / max(self.pixel_limit, 1e-6) / max(self.min_area, 1.0)
        if not suspicious.any():
            return 0.0, 0.0, min(below, 0.999 / max(self.min_area, 1.0))
        count, labels, stats, _ = cv2.connectedComponentsWithStats(suspicious, connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
        peaks = np.zeros(count, np.float64)
        np.maximum.at(peaks, labels.ravel().astype(np.intp), deviation.ravel().astype(np.float64))
        contrast = peaks[1:]
        margin = np.minimum(areas / self.min_area, contrast / self.min_contrast)
        return float(areas.max()), float(contrast.max()), float(margin.max())

    # -- scoring ---------------------------------------------------------------------------------------
    def score(
        self, images: Sequence[np.ndarray], maps: MapSize = MapSize.INPUT, name_from: float | None = None
    ) -> Scores:
        """Names no defects. Maps are the deviation in tolerance units (masked regions are 0)."""
        self.check_fitted()
        assert self.mean is not None
        shape = self.mean.shape
        scores = np.empty(len(images), dtype=np.float32)
        out: list[np.ndarray] = []
        for i, image in enumerate(images):
            deviation = self._deviation(*self._register(self._gray(image, shape), self.mean))
            scores[i] = self._blob_rules(deviation)[2]
            if maps is MapSize.INPUT:
                height, width = image.shape[:2]
                out.append(cv2.resize(deviation, (width, height), interpolation=cv2.INTER_LINEAR))
            elif maps is MapSize.WORKING:
                out.append(deviation)
        return Scores(scores, None if maps is MapSize.NONE else out)

    # -- model file ------------------------------------------------------------------------------------
    def fitted_config(self) -> JsonObject:
        return {"pixel_limit": self.pixel_limit, "min_area": self.min_area, "min_contrast": self.min_contrast}

    def tensors(self) -> Tensors:
        self.check_fitted()
        assert self.mean is not None and self.spread is not None and self.mask is not None
        return {name: torch.from_numpy(value) for name, value in
                (("mean", self.mean), ("spread", self.spread), ("mask", self.mask))}

    def restore(self, fitted: Mapping[str, JsonValue], tensors: Mapping[str, torch.Tensor]) -> None:
        self.pixel_limit = json_float(fitted, "pixel_limit")
        self.min_area = json_float(fitted, "min_area")
        self.min_contrast = json_float(fitted, "min_contrast")
        self.mean, self.spread, self.mask = (tensors[k].numpy() for k in ("mean", "spread", "mask"))



def _outside(shape: tuple[int, int], boxes: Sequence[Box]) -> np.ndarray:
    """1 outside `boxes` (fractions x0, y0, x1, y1), 0 inside, rounded outwards as `blank_boxes` does."""
    mask = np.ones(shape, np.float32)
    height, width = shape
    for x0, y0, x1, y1 in boxes:
        rows = slice(int(np.floor(y0 * height)), int(np.ceil(y1 * height)))
        mask[rows, int(np.floor(x0 * width)) : int(np.ceil(x1 * width))] = 0.0
    return mask
