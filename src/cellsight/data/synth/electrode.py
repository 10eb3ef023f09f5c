"""Electrode station: the coated web of a lithium-ion electrode under diffuse light, grey.

A good coating is a fine, even granular texture (graphite or NMC particles) with faint structure
along the coating direction (vertical). Defects expose the bright copper/aluminium foil (pinholes,
scratches, uncoated areas) or change the coating's thickness (agglomerates, streaks).
"""

from __future__ import annotations

import cv2
import numpy as np

from cellsight.data.synth.common import Label, blob, fine_noise, free_point, paint, polyline, smooth_noise

CLASSES = ("pinhole", "agglomerate", "scratch", "uncoated", "streak")


def scene(rng: np.random.Generator, size: int, label: Label) -> tuple[np.ndarray, None]:
    """A good coating: grain at two scales, slow coat-weight drift, faint machine-direction lines."""
    grain_px = size / 256
    level = rng.uniform(0.28, 0.32)
    texture = 0.03 * fine_noise(rng, size, 0.7 * grain_px) + 0.018 * fine_noise(rng, size, 2.0 * grain_px)
    drift = 0.012 * smooth_noise(rng, size, 4)
    lines = cv2.resize(rng.standard_normal((1, size // 2)).astype(np.float32), (size, size))
    return (level + texture + drift + 0.006 * lines).astype(np.float32), None


def defect(image: np.ndarray, context: None, rng: np.random.Generator, kind: str, size: int,
           label: Label) -> tuple[np.ndarray, np.ndarray]:
    """Paint one defect of `kind`; returns the scene and the defect's alpha map."""
    s = size / 256
    if kind == "pinhole":
        alpha = np.zeros((size, size), np.float32)
        radius = float(rng.choice([1.0, 1.5, 2.0, 3.0, 4.5])) * s
        x, y = free_point(rng, size, label, 4)
        cv2.circle(alpha, (x * 4, y * 4), round(radius * 4), 1.0, -1, cv2.LINE_AA, shift=2)
        halo = np.clip(3.0 * cv2.GaussianBlur(alpha, (0, 0), 2.0 * s) - alpha, 0, 1)  # thinned coating around it
        return paint(image, alpha, rng.uniform(0.6, 1.0)) - 0.05 * halo, alpha
    if kind == "agglomerate":
        alpha = blob(rng, size, free_point(rng, size, label, 12), rng.uniform(3, 12) * s, rough=0.35, soft=1.5)
        relief = alpha - np.roll(alpha, (2, 2), axis=(0, 1))  # lit from the top left: highlight and shadow
        delta = rng.choice([-1.0, 1.0]) * rng.uniform(0.05, 0.14)
        smoothed = cv2.GaussianBlur(image, (0, 0), 1.5 * s)
        return paint(image, alpha * 0.6, smoothed) + delta * alpha + 0.1 * relief, alpha
    if kind == "scratch":
        start = free_point(rng, size, label, 8)
        alpha = polyline(rng, size, start, rng.uniform(25, 0.85 * size), 0.08, int(rng.integers(1, 4) * s))
        bright = rng.random() < 0.6  # through the coating to the foil, or only a groove in it
        delta = rng.uniform(0.08, 0.45) if bright else -rng.uniform(0.05, 0.13)
        return image + delta * alpha, alpha
    if kind == "uncoated":
        alpha = _uncoated_area(rng, size, label)
        foil = rng.uniform(0.6, 0.85) + 0.015 * cv2.blur(fine_noise(rng, size, 0.6), (15, 1))
        return paint(image, alpha, foil), alpha
    if kind == "streak":
        centre = rng.uniform(6, size - 6)
        half = rng.uniform(1.0, 4.5) * s
        cols = np.arange(size, dtype=np.float32)
        profile = np.exp(-(((cols - centre) / half) ** 4))
        along = 0.8 + 0.2 * smooth_noise(rng, size, 3)[:, :1]  # coat weight wanders along the streak
        alpha = (along * profile[None, :]).astype(np.float32)
        delta = rng.choice([-1.0, 1.0]) * rng.uniform(0.04, 0.1)
        return image + delta * alpha, np.clip(alpha, 0, 1)
    raise ValueError(f"unknown electrode defect {kind!r}; choose from {', '.join(CLASSES)}")


def _uncoated_area(rng: np.random.Generator, size: int, label: Label) -> np.ndarray:
    """Bare foil: a band at the right or bottom web edge (coater edge) or an island (coating dropout)."""
    if rng.random() < 0.5:
        return blob(rng, size, free_point(rng, size, label, 16), rng.uniform(6, 0.32 * size), rough=0.5, soft=1.5)
    width = rng.uniform(0.06, 0.42) * size
    edge = size - width + 0.04 * size * smooth_noise(rng, size, 3)[:, 0]
    cols = np.arange(size, dtype=np.float32)
    alpha = np.clip(cols[None, :] - edge[:, None] + 0.5, 0, 1).astype(np.float32)
    return alpha.T.copy() if rng.random() < 0.5 else alpha
