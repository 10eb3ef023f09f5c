"""Heat-map overlays and PNG data URIs, shared by the HTML report and the dashboard."""

from __future__ import annotations

import base64

import cv2
import numpy as np


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Gray, gray+channel, RGB or RGBA of any numeric dtype → RGB uint8 (min-max scaled if not uint8)."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"expected a gray or RGB image, got shape {img.shape}")
    if img.dtype != np.uint8:
        values = np.nan_to_num(img.astype(np.float64))
        lo, hi = float(values.min()), float(values.max())
        scaled = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
        img = np.round(scaled * 255.0).astype(np.uint8)
    return np.ascontiguousarray(np.stack([img] * 3, axis=-1) if img.ndim == 2 else img)


def overlay_heatmap(image: np.ndarray, anomaly_map: np.ndarray | None, alpha: float = 0.5) -> np.ndarray:
    """The image with a JET heat map blended over it, RGB uint8 at the image's size.

    `anomaly_map` is on the normalised scale (0.5 = threshold, clipped to [0, 1]), so the colours mean
    the same on every image: blue = normal, green/yellow = near the threshold, red = well above it.
    Resized to the image when their sizes differ; NaN counts as 0. None returns the plain RGB image.
    """
    rgb = to_rgb_uint8(image)
    if anomaly_map is None:
        return rgb
    amap = np.nan_to_num(np.asarray(anomaly_map, dtype=np.float32), nan=0.0)
    if amap.ndim != 2:
        raise ValueError(f"anomaly map must be 2-D, got shape {amap.shape}")
    if amap.shape != rgb.shape[:2]:
        resized = cv2.resize(amap, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
        amap = np.asarray(resized, dtype=np.float32)
    levels = np.round(np.clip(amap, 0.0, 1.0) * 255.0).astype(np.uint8)
    heat = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 1.0 - alpha, heat, alpha, 0.0)


def thumbnail(image: np.ndarray, max_side: int = 256) -> np.ndarray:
    """Shrink so the longer side is at most `max_side` (never enlarges); keeps the report small."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def png_data_uri(rgb: np.ndarray) -> str:
    """A self-contained ``data:image/png;base64,...`` URI for an RGB (or gray) uint8 image."""
    img = to_rgb_uint8(rgb)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")
