"""Heat-map overlay and PNG data URIs."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from cellsight.metrics import overlay_heatmap, png_data_uri
from cellsight.metrics.overlay import thumbnail, to_rgb_uint8


def test_overlay_colours_follow_the_normalised_scale() -> None:
    gray = np.full((10, 20), 128, np.uint8)
    amap = np.zeros((5, 10), np.float32)  # half size: resized to the image
    amap[:, 5:] = 1.0
    out = overlay_heatmap(gray, amap)
    assert out.shape == (10, 20, 3) and out.dtype == np.uint8
    cold, hot = out[5, 2].astype(int), out[5, 17].astype(int)
    assert cold[2] > cold[0]  # blue where normal
    assert hot[0] > hot[2]  # red where far above the threshold


def test_overlay_without_map_is_the_rgb_image() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (6, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(overlay_heatmap(rgb, None), rgb)
    np.testing.assert_array_equal(overlay_heatmap(rgb[:, :, :1], None)[:, :, 2], rgb[:, :, 0])


def test_non_uint8_images_are_scaled_and_nan_maps_tolerated() -> None:
    img16 = np.linspace(0, 4000, 64, dtype=np.uint16).reshape(8, 8)
    rgb = to_rgb_uint8(img16)
    assert rgb.dtype == np.uint8 and rgb.min() == 0 and rgb.max() == 255
    out = overlay_heatmap(img16, np.full((8, 8), np.nan, np.float32))
    assert out.shape == (8, 8, 3)
    with pytest.raises(ValueError, match="gray or RGB"):
        to_rgb_uint8(np.zeros((4, 4, 2)))


def test_png_data_uri_round_trips() -> None:
    rgb = np.random.default_rng(1).integers(0, 255, (9, 11, 3), dtype=np.uint8)
    uri = png_data_uri(rgb)
    assert uri.startswith("data:image/png;base64,")
    raw = np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8)
    decoded = cv2.cvtColor(cv2.imdecode(raw, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(decoded, rgb)


def test_thumbnail_only_shrinks() -> None:
    assert thumbnail(np.zeros((1000, 500, 3), np.uint8), 256).shape == (256, 128, 3)
    assert thumbnail(np.zeros((10, 5), np.uint8), 256).shape == (10, 5)
