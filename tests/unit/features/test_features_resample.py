"""OpenCV's resize and blur as matrices (the GPU path's) give OpenCV's results to float rounding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cellsight.features.resample import resize_matrix, smooth_upsample_matrix


@pytest.mark.parametrize(("height", "width", "size"), [(300, 300, 256), (90, 70, 64), (64, 64, 64), (512, 300, 256)])
def test_shrinking_matrices_are_inter_area(height: int, width: int, size: int) -> None:
    image = np.random.default_rng(height).random((height, width)).astype(np.float32)
    expected = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    got = resize_matrix(height, size) @ image.astype(np.float64) @ resize_matrix(width, size).T
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize(("side", "size", "sigma"), [(32, 256, 4.0), (8, 64, 4.0), (8, 64, 2.0), (4, 16, 4.0)])
def test_upsample_then_blur_is_one_matrix(side: int, size: int, sigma: float) -> None:
    """INTER_LINEAR then GaussianBlur (sigma, reflected borders; at 16 px the kernel is wider than the map)."""
    scores = np.random.default_rng(side).random((side, side)).astype(np.float32)
    expected = cv2.GaussianBlur(cv2.resize(scores, (size, size), interpolation=cv2.INTER_LINEAR), (0, 0), sigma)
    matrix = smooth_upsample_matrix(side, size, sigma)
    np.testing.assert_allclose(matrix @ scores.astype(np.float64) @ matrix.T, expected, atol=1e-6)


def test_area_matrix_refuses_to_enlarge() -> None:
    from cellsight.features.resample import area_matrix

    with pytest.raises(ValueError, match="only shrinks"):
        area_matrix(32, 64)
