"""Can station: the side of a cylindrical aluminium cell can under a line light, grey.

The can is drawn (brushing marks along its axis, vertical here) and wrapped in a thin protective
film that softens the brushing. The cylinder shows as a bright specular band across x.
"""

from __future__ import annotations

import cv2
import numpy as np

from cellsight.data.synth.common import Label, blob, fine_noise, free_point, paint, polyline, smooth_noise

CLASSES = ("dent", "scratch", "leak_stain", "missing_film")
FILM = 0.55  # share of the brushing contrast that shows through the film


def scene(rng: np.random.Generator, size: int, label: Label) -> tuple[np.ndarray, np.ndarray]:
    """A good can; also returns the bare brushing texture, which shows fully where film is missing."""
    xs = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    band = rng.uniform(-0.3, 0.3)
    width = rng.uniform(0.12, 0.2)
    profile = 0.40 + 0.10 * np.cos(xs * np.pi / 2) + rng.uniform(0.16, 0.24) * np.exp(-(((xs - band) / width) ** 2))
    streaks = cv2.blur(fine_noise(rng, size, 0.5), (1, max(9, size // 6)))
    brush = (streaks / max(float(streaks.std()), 1e-6)).astype(np.float32)
    image = profile[None, :] + 0.04 * FILM * brush + 0.012 * smooth_noise(rng, size, 3)
    return image.astype(np.float32), brush


def defect(image: np.ndarray, brush: np.ndarray, rng: np.random.Generator, kind: str, size: int,
           label: Label) -> tuple[np.ndarray, np.ndarray]:
    """Paint one defect of `kind`; returns the scene and the defect's alpha map."""
    s = size / 256
    if kind == "dent":
        radius = rng.uniform(5, 28) * s
        alpha = blob(rng, size, free_point(rng, size, label, int(radius)), radius, rough=0.2, soft=radius * 0.35)
        shift = max(1, int(radius / 4))
        slope = np.roll(alpha, -shift, axis=1) - np.roll(alpha, shift, axis=1)  # side light: one flank bright
        depth = rng.uniform(0.02, 0.12)
        return image + depth * slope - 0.3 * depth * alpha, alpha
    if kind == "scratch":
        start = free_point(rng, size, label, 8)
        alpha = polyline(rng, size, start, rng.uniform(20, 0.8 * size), 0.06, max(1, int(rng.integers(1, 3) * s)))
        delta = rng.uniform(0.08, 0.3) if rng.random() < 0.5 else -rng.uniform(0.06, 0.15)
        return image + delta * alpha, alpha
    if kind == "leak_stain":
        alpha = blob(rng, size, free_point(rng, size, label, 10), rng.uniform(8, 0.18 * size), rough=0.5, soft=3 * s)
        rim = 4.0 * alpha * (1.0 - alpha)  # dried electrolyte collects at the edge: a coffee ring
        dried = paint(image, alpha * rng.uniform(0.1, 0.5), cv2.GaussianBlur(image, (0, 0), 2.0 * s))
        return dried - rng.uniform(0.01, 0.06) * alpha - rng.uniform(0.005, 0.03) * rim, alpha
    if kind == "missing_film":
        radius = rng.uniform(0.08, 0.42) * size
        alpha = blob(rng, size, free_point(rng, size, label, 10), radius, rough=0.5, soft=1.5 * s)
        torn = np.clip(1.0 - np.abs(alpha - 0.5) * 5.0, 0, 1)  # the lifted film edge catches the light
        bare = 0.04 * (1.0 - FILM) * brush + rng.uniform(0.01, 0.07)
        return image + alpha * bare + rng.uniform(0.0, 0.05) * torn, alpha
    raise ValueError(f"unknown can defect {kind!r}; choose from {', '.join(CLASSES)}")
