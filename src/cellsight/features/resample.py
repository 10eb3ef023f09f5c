"""OpenCV's resize and Gaussian blur as matrices, so that a batch is resized and smoothed on any torch
device (the GPU path) with the CPU path's arithmetic, up to float rounding.

Both steps are linear and separable: an (H, W) image resized to (h, w) is `Ry @ image @ Rx.T`, and a
blur with reflected borders is `G @ map @ G.T`. Resize-then-blur of a patch-score map therefore collapses
into one pair of matrices, `(G Ry) P (G Rx).T`: two small matrix products per image, batched. The
weights are OpenCV's (`cv2.resize` INTER_AREA for shrinking, INTER_LINEAR for enlarging float images,
`cv2.GaussianBlur` with its kernel size rule and BORDER_REFLECT_101), so scores agree with the CPU path
to float rounding; `tests/unit/features/test_features_resample.py` checks them against OpenCV.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np


@cache
def area_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) weights of INTER_AREA shrinking: each output pixel averages the source area it covers."""
    if dst > src:
        raise ValueError(f"INTER_AREA as a matrix only shrinks: {src} -> {dst}")
    scale = src / dst
    out = np.zeros((dst, src), dtype=np.float64)
    for i in range(dst):
        start, stop = i * scale, (i + 1) * scale
        for j in range(math.floor(start), min(src, math.ceil(stop))):
            out[i, j] = (min(stop, j + 1) - max(start, j)) / scale
    return out


@cache
def linear_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) weights of INTER_LINEAR (pixel centres aligned, edges clamped), as for float images."""
    scale = src / dst
    out = np.zeros((dst, src), dtype=np.float64)
    for i in range(dst):
        x = (i + 0.5) * scale - 0.5
        left = math.floor(x)
        frac = x - left
        if left < 0:
            left, frac = 0, 0.0
        if left >= src - 1:
            left, frac = src - 1, 0.0
        out[i, left] += 1.0 - frac
        if frac > 0.0:
            out[i, left + 1] += frac
    return out


def _reflect101(p: int, n: int) -> int:
    if n == 1:
        return 0
    while p < 0 or p >= n:
        p = -p if p < 0 else 2 * (n - 1) - p
    return p


@cache
def gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) `cv2.GaussianBlur` of a float32 signal: kernel size round(8 sigma + 1) | 1, reflected borders."""
    size = round(sigma * 4 * 2 + 1) | 1  # OpenCV's cvRound: half to even, as Python's round
    radius = size // 2
    taps = np.exp(-((np.arange(size) - radius) ** 2) / (2.0 * sigma * sigma))
    taps = (taps / taps.sum()).astype(np.float32).astype(np.float64)  # OpenCV keeps a float32 kernel
    out = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for t in range(size):
            out[i, _reflect101(i + t - radius, n)] += taps[t]
    return out


@cache
def resize_matrix(src: int, dst: int) -> np.ndarray:
    """`cv2.resize` of a float image along one axis: INTER_AREA shrinking, identity, INTER_LINEAR enlarging."""
    if src == dst:
        return np.eye(src)
    return area_matrix(src, dst) if dst < src else linear_matrix(src, dst)


@cache
def smooth_upsample_matrix(src: int, dst: int, sigma: float) -> np.ndarray:
    """(dst, src): INTER_LINEAR from `src` to `dst` then the Gaussian blur, as one matrix."""
    return gaussian_matrix(dst, sigma) @ linear_matrix(src, dst)
