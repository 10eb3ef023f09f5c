"""What every synthetic station shares: seeded randomness, the code label, shapes and the camera.

A scene is float32 reflectance in [0, 1] (HxW grey or HxWx3 RGB). Defects are painted into the
scene through an alpha map whose thresholded footprint is the ground-truth mask; then the ID label
is stuck on (it covers whatever lies under it, so masks are cut there); then the camera adds what
varies between real shots: lighting gradient, vignetting, exposure, defocus and sensor noise.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from cellsight.data.cellcode import QUIET_MODULES, render_code
from cellsight.errors import ConfigError

MIN_SIZE = 128
MAX_SIZE = 2048
MASK_ALPHA = 0.4  # an alpha at or above this is a defect pixel: the visible core of a soft defect
_CODE_MODULES = 16 + 2 * QUIET_MODULES  # square symbols for IDs up to 24 characters fit 16x16


def rng_for(seed: int, *parts: str) -> np.random.Generator:
    """A generator fixed by the seed and names: same arguments, same numbers, on every machine.

    zlib.crc32 rather than hash(): str hashes change between interpreter runs.
    """
    return np.random.default_rng([seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, *(zlib.crc32(p.encode()) for p in parts)])


def check_size(size: int) -> None:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(f"size must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {size}")


@dataclass(frozen=True)
class Label:
    """Where the ID label sits: a fixed top-left square that defects never enter."""

    module_px: int
    margin: int
    side: int  # label side in pixels (code plus a paper border)

    @property
    def keepout(self) -> int:
        """Side of the top-left square reserved for the label, including its position jitter."""
        return self.margin * 2 + self.side + self.module_px * 2


def label_for(size: int) -> Label:
    module_px = max(2, round(size / 85))
    return Label(module_px=module_px, margin=max(3, size // 48), side=_CODE_MODULES * module_px + 2 * module_px)


def free_point(rng: np.random.Generator, size: int, label: Label, border: int = 0) -> tuple[int, int]:
    """A random (x, y) at least `border` px from the image edge and outside the label keep-out."""
    lo, hi = border, size - 1 - border
    for _ in range(100):
        x, y = (int(v) for v in rng.integers(lo, hi + 1, 2))
        if x > label.keepout + border or y > label.keepout + border:
            return x, y
    return size - 1 - border, size - 1 - border


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field in about [-1, 1] with `cells` bumps across the image (cheap: upsampled grid)."""
    grid = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    field = cv2.resize(grid, (size + 2 * size // cells, size + 2 * size // cells), interpolation=cv2.INTER_CUBIC)
    off = size // cells
    return np.ascontiguousarray(field[off : off + size, off : off + size]) * 0.6


def fine_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Grain: white noise blurred to a `sigma`-pixel correlation, unit standard deviation."""
    white = rng.standard_normal((size, size), dtype=np.float32)
    if sigma <= 0:
        return white
    blurred = cv2.GaussianBlur(white, (0, 0), sigma)
    return blurred / max(float(blurred.std()), 1e-6)


def blob(rng: np.random.Generator, size: int, center: tuple[int, int], radius: float, rough: float = 0.3,
         aspect: float = 1.0, soft: float = 1.0) -> np.ndarray:
    """Alpha map (float32 0..1) of an irregular blob: an ellipse whose rim wobbles by `rough`."""
    cx, cy = center
    half = int(radius * max(aspect, 1.0) * (1 + rough) + 3 * soft + 3)
    x0, y0, x1, y1 = max(cx - half, 0), max(cy - half, 0), min(cx + half + 1, size), min(cy + half + 1, size)
    alpha = np.zeros((size, size), np.float32)
    if x1 <= x0 or y1 <= y0:
        return alpha
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    dx, dy = xx - cx, yy - cy
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / aspect
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    theta = np.arctan2(v, u)
    wobble = np.ones_like(theta)
    for k in (2, 3, 5):
        wobble += rough / k * rng.uniform(-1, 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    dist = np.sqrt(u * u + v * v) / (radius * wobble)
    alpha[y0:y1, x0:x1] = np.clip((1.0 - dist) * radius / max(soft, 0.5) + 0.5, 0.0, 1.0)
    return alpha


def polyline(rng: np.random.Generator, size: int, start: tuple[int, int], length: float, bend: float,
             thickness: int, jagged: float = 0.0) -> np.ndarray:
    """Alpha map of a scratch- or crack-like line from `start`, `bend` rad of drift per segment."""
    canvas = np.zeros((size, size), np.uint8)
    angle = rng.uniform(0, 2 * np.pi)
    points = [np.array(start, np.float64)]
    segments = max(2, int(length / 12))
    for _ in range(segments):
        angle += rng.normal(0, bend) + rng.normal(0, jagged)
        points.append(points[-1] + length / segments * np.array([np.cos(angle), np.sin(angle)]))
    pts = np.round(np.array(points) * 4).astype(np.int32)  # 2 fractional bits: smooth sub-pixel lines
    cv2.polylines(canvas, [pts], False, 255, max(1, thickness), cv2.LINE_AA, shift=2)
    return canvas.astype(np.float32) / 255.0


def paint(scene: np.ndarray, alpha: np.ndarray, target: np.ndarray | float) -> np.ndarray:
    """Blend `target` into `scene` where alpha says (alpha broadcasts over colour channels)."""
    a = alpha[..., None] if scene.ndim == 3 else alpha
    return scene * (1.0 - a) + np.asarray(target, np.float32) * a


def place_label(scene: np.ndarray, cell_id: str, label: Label, rng: np.random.Generator) -> np.ndarray:
    """Stick the ID label in the top-left corner: paper-white square, dark modules, a few px of jitter."""
    code = _fitting_code(cell_id, label)
    paper = float(rng.uniform(0.62, 0.72))
    ink = float(rng.uniform(0.24, 0.32))
    patch = np.full((label.side, label.side), paper, np.float32)
    inset = (label.side - code.shape[0]) // 2
    patch[inset : inset + code.shape[0], inset : inset + code.shape[1]] = ink + (paper - ink) * code
    jitter = int(label.module_px * 2)
    x, y = (label.margin + int(v) for v in rng.integers(0, jitter + 1, 2))
    out = scene.copy()
    region = out[y : y + label.side, x : x + label.side]
    region[...] = patch[..., None] if scene.ndim == 3 else patch
    return out


def _fitting_code(cell_id: str, label: Label) -> np.ndarray:
    """The code at the label's module size, or smaller modules for long IDs (bigger symbols)."""
    room = label.side - 2 * label.module_px
    for module_px in range(label.module_px, 0, -1):
        code = render_code(cell_id, module_px)
        if code.shape[0] <= room:
            return code.astype(np.float32) / 255.0
    raise ValueError(f"cell ID {cell_id!r} is too long for the label ({len(cell_id)} characters)")


def clear_label(mask: np.ndarray, label: Label) -> np.ndarray:
    """The mask with the label keep-out square cleared: the label covers any defect under it."""
    out = mask.copy()
    out[: label.keepout, : label.keepout] = False
    return out


@dataclass(frozen=True)
class Camera:
    """One shot's optics and sensor; ranges are narrow enough that goods stay one population."""

    gain: float
    gradient: float
    gradient_angle: float
    vignette: float
    blur: float
    read_noise: float
    shot_noise: float


def random_camera(rng: np.random.Generator) -> Camera:
    return Camera(
        gain=float(rng.uniform(0.90, 1.10)),
        gradient=float(rng.uniform(0.0, 0.14)),
        gradient_angle=float(rng.uniform(0, 2 * np.pi)),
        vignette=float(rng.uniform(0.05, 0.20)),
        blur=float(rng.uniform(0.3, 0.85)),
        read_noise=float(rng.uniform(0.006, 0.014)),
        shot_noise=float(rng.uniform(0.010, 0.020)),
    )


def shoot(scene: np.ndarray, camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """The camera's view of the scene as uint8: light falloff, defocus, noise, quantisation."""
    size = scene.shape[0]
    light = _illumination(size, camera)
    lit = scene * (light[..., None] if scene.ndim == 3 else light)
    if camera.blur > 0:
        lit = cv2.GaussianBlur(lit, (0, 0), camera.blur)
    noise = rng.standard_normal(lit.shape, dtype=np.float32)
    sigma = np.sqrt(camera.read_noise**2 + camera.shot_noise**2 * np.clip(lit, 0, 1))
    out = (lit + noise * sigma) * 255.0 + 0.5
    return np.clip(out, 0, 255).astype(np.uint8)


def _illumination(size: int, camera: Camera) -> np.ndarray:
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    gx = camera.gradient * np.cos(camera.gradient_angle) * ramp
    gy = camera.gradient * np.sin(camera.gradient_angle) * ramp
    r2 = ramp[None, :] ** 2 + ramp[:, None] ** 2  # 0 at the centre, 0.5 in the corners
    return camera.gain * (1.0 + gx[None, :] + gy[:, None]) * (1.0 - camera.vignette * 2.0 * r2)
