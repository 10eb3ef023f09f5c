"""Tab-weld station: two tabs (aluminium cathode, copper anode) on the cell top, RGB.

Colour matters here: burns are brown-black oxide on copper or aluminium, spatter is bright metal.
Each tab carries a 2 x 3 array of ultrasonic weld spots, each a knurled square left by the horn.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from cellsight.data.synth.common import Label, blob, fine_noise, paint, polyline

CLASSES = ("missing_spot", "burn", "spatter", "crack")
ALUMINIUM = np.array([0.74, 0.75, 0.77], np.float32)
COPPER = np.array([0.86, 0.52, 0.36], np.float32)


@dataclass(frozen=True)
class Welds:
    """Where the spots are (top-left corners), their side, and the tab colour under each."""

    spots: tuple[tuple[int, int], ...]
    side: int
    colours: tuple[np.ndarray, ...]
    depth: float


def scene(rng: np.random.Generator, size: int, label: Label) -> tuple[np.ndarray, Welds]:
    """Cell top with both tabs; the weld spots are pressed in later so a defect can skip one."""
    s = size / 256
    image = np.empty((size, size, 3), np.float32)
    image[...] = np.array([0.20, 0.21, 0.23], np.float32) * rng.uniform(0.95, 1.05)
    image += 0.015 * fine_noise(rng, size, 1.0)[..., None]
    top = label.keepout + int(rng.integers(4, 10) * s)
    side = round(20 * s)
    pitch = round(28 * s)
    spots: list[tuple[int, int]] = []
    colours: list[np.ndarray] = []
    rolled = cv2.blur(fine_noise(rng, size, 0.6), (1, max(3, size // 16)))  # rolling marks along the tab
    for x_frac, colour in ((0.12, ALUMINIUM), (0.56, COPPER)):
        x0 = int(x_frac * size + rng.integers(-3, 4) * s)
        x1 = x0 + int(0.32 * size)
        tint = colour * rng.uniform(0.96, 1.04)
        image[top:, x0:x1] = tint * (1.0 + 0.03 * rolled[top:, x0:x1, None])
        image[top:, x0 : x0 + 2] *= 0.7  # bevelled tab edges catch less light
        image[top:, x1 - 2 : x1] *= 0.8
        gx = x0 + (x1 - x0 - pitch - side) // 2
        gy = top + int((size - top - 2 * pitch - side) * 0.55)
        for row in range(3):
            for col in range(2):
                spots.append((gx + col * pitch + int(rng.integers(-1, 2)), gy + row * pitch + int(rng.integers(-1, 2))))
                colours.append(tint)
    return image, Welds(tuple(spots), side, tuple(colours), float(rng.uniform(0.85, 1.0)))


def press_spots(image: np.ndarray, welds: Welds, skip: int = -1, skip_depth: float = 0.0) -> np.ndarray:
    """Knurl every spot into the tabs; spot `skip` gets only `skip_depth` of the normal imprint."""
    out = image.copy()
    knurl = _knurl(welds.side)
    for index, (x, y) in enumerate(welds.spots):
        depth = welds.depth * (skip_depth if index == skip else 1.0)
        region = out[y : y + welds.side, x : x + welds.side]
        region *= (1.0 + depth * (knurl - 1.0))[..., None]
    return out


def defect(image: np.ndarray, welds: Welds, rng: np.random.Generator, kind: str, size: int,
           label: Label) -> tuple[np.ndarray, np.ndarray]:
    """Press the spots with one defect of `kind`; returns the scene and the defect's alpha map."""
    s = size / 256
    alpha = np.zeros((size, size), np.float32)
    index = int(rng.integers(len(welds.spots)))
    x, y = welds.spots[index]
    centre = (x + welds.side // 2, y + welds.side // 2)
    if kind == "missing_spot":
        alpha[y : y + welds.side, x : x + welds.side] = 1.0
        return press_spots(image, welds, skip=index, skip_depth=rng.uniform(0.0, 0.35)), alpha
    pressed = press_spots(image, welds)
    if kind == "burn":
        jitter = rng.integers(-welds.side // 2, welds.side // 2 + 1, 2)
        alpha = blob(rng, size, (centre[0] + int(jitter[0]), centre[1] + int(jitter[1])),
                     rng.uniform(0.5, 1.5) * welds.side, rough=0.4, soft=4 * s)
        oxide = np.array([0.30, 0.18, 0.12], np.float32) * rng.uniform(0.6, 1.3)
        return paint(pressed, alpha * rng.uniform(0.2, 0.8), oxide), alpha
    if kind == "spatter":
        for _ in range(int(rng.integers(2, 9))):
            px = int(centre[0] + rng.normal(0, 1.5 * welds.side))
            py = int(centre[1] + rng.normal(0, 1.5 * welds.side))
            cv2.circle(alpha, (px * 4, py * 4), round(rng.uniform(1.0, 3.0) * s * 4), 1.0, -1, cv2.LINE_AA, shift=2)
        bead = np.array([0.93, 0.91, 0.86], np.float32) if rng.random() < 0.6 else np.array([0.25, 0.22, 0.2])
        return paint(pressed, alpha, bead), alpha
    if kind == "crack":
        start = (x + int(rng.integers(0, welds.side)), y + (0 if rng.random() < 0.5 else welds.side))
        alpha = polyline(rng, size, start, rng.uniform(10, 0.22 * size), 0.15, max(1, int(rng.integers(1, 3) * s)),
                         jagged=0.35)
        return pressed * (1.0 - rng.uniform(0.45, 0.8) * alpha[..., None]), alpha
    raise ValueError(f"unknown weld defect {kind!r}; choose from {', '.join(CLASSES)}")


@lru_cache(maxsize=16)
def _knurl(side: int) -> np.ndarray:
    """Brightness factor of a knurled spot: 5 x 5 pyramids lit from the top left, darker overall."""
    pitch = side / 5
    u = (np.arange(side, dtype=np.float32) + 0.5) / pitch % 1.0 - 0.5
    uu, vv = np.meshgrid(u, u)
    facet = np.where(np.abs(uu) > np.abs(vv), -np.sign(uu), -np.sign(vv))  # +1 faces the light
    factor = (0.72 + 0.2 * facet).astype(np.float32)
    factor.setflags(write=False)
    return factor
