"""Patch scores -> anomaly maps, the same way for every patch-feature detector (PatchCore, SimpleNet).

A detector's raw map is its patch grid upsampled (bilinear) to the working size, blurred once (the blur
turns a grid of patch scores into a map whose maximum is a stable image score) and blanked where
`ignore_boxes` say the model must not judge; maps at an input's size are that map resized.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from cellsight.detectors.ignore import Box, blank_boxes


def smoothed(work: np.ndarray, sigma: float, boxes: Sequence[Box]) -> np.ndarray:
    """A map at the working size, Gaussian-blurred by `sigma`, ignore boxes blanked."""
    return blank_boxes(cv2.GaussianBlur(work, (0, 0), sigma), boxes)


def working_map(patch_scores: np.ndarray, size: int, sigma: float, boxes: Sequence[Box]) -> np.ndarray:
    """One image's (h, w) patch scores -> its smoothed (size, size) map (its maximum: the image score)."""
    return smoothed(cv2.resize(patch_scores, (size, size), interpolation=cv2.INTER_LINEAR), sigma, boxes)


def at_input_size(work: np.ndarray, image: np.ndarray) -> np.ndarray:
    """A working-size map at `image`'s size."""
    height, width = image.shape[:2]
    return cv2.resize(work, (width, height), interpolation=cv2.INTER_LINEAR)
