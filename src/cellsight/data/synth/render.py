"""Render one station image: a pure function of (station, cell ID, seed, defect class, size)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cellsight.data.dataset import GOOD
from cellsight.data.synth import can, electrode, weld
from cellsight.data.synth.common import (
    MASK_ALPHA,
    check_size,
    clear_label,
    label_for,
    place_label,
    random_camera,
    rng_for,
    shoot,
)
from cellsight.errors import ConfigError

_MIN_DEFECT_PIXELS = 3
_TRIES = 30
_TOUCH_ALPHA = 0.02  # a defect fainter than this in the label corner does not touch it


@dataclass(frozen=True)
class _Station:
    classes: tuple[str, ...]
    scene: Callable[..., tuple[np.ndarray, Any]]
    defect: Callable[..., tuple[np.ndarray, np.ndarray]]
    good: Callable[[np.ndarray, Any], np.ndarray]


_STATIONS = {
    "electrode": _Station(electrode.CLASSES, electrode.scene, electrode.defect, lambda image, _: image),
    "weld": _Station(weld.CLASSES, weld.scene, weld.defect, weld.press_spots),
    "can": _Station(can.CLASSES, can.scene, can.defect, lambda image, _: image),
}
STATIONS: dict[str, tuple[str, ...]] = {name: station.classes for name, station in _STATIONS.items()}


@dataclass(frozen=True)
class SynthCell:
    """One station image: `mask` is True on defect pixels (all False for a good cell)."""

    image: np.ndarray
    mask: np.ndarray
    defect_class: str
    cell_id: str


def check_station(station: str, defect_class: str | None = None) -> tuple[str, ...]:
    """The station's defect classes; ValueError naming the choices for an unknown station or class."""
    if station not in STATIONS:
        raise ConfigError(f"unknown station {station!r}; choose from {', '.join(STATIONS)}")
    classes = STATIONS[station]
    if defect_class is not None and defect_class not in classes:
        raise ConfigError(f"unknown {station} defect class {defect_class!r}; choose from {', '.join(classes)}")
    return classes


def render_cell(station: str, cell_id: str, seed: int, defect_class: str | None = None, size: int = 256) -> SynthCell:
    """Render one cell at one station; the same arguments give byte-identical images.

    The good scene and the camera depend only on (station, seed, size): the same seed with and
    without a defect differ only by the defect (and the label's ID), which makes masks easy to trust.
    """
    check_station(station, defect_class)
    check_size(size)
    spec = _STATIONS[station]
    label = label_for(size)
    rng = rng_for(seed, station, "scene")
    image, context = spec.scene(rng, size, label)
    camera = random_camera(rng)
    mask = np.zeros((size, size), bool)
    if defect_class is None:
        image = spec.good(image, context)
    else:
        image, mask = _with_defect(spec, image, context, rng_for(seed, station, defect_class), defect_class, size)
    image = place_label(image, cell_id, label, rng)
    pixels = shoot(image, camera, rng)
    return SynthCell(pixels, clear_label(mask, label), defect_class or GOOD, cell_id)


def _with_defect(spec: _Station, image: np.ndarray, context: Any, rng: np.random.Generator, kind: str,
                 size: int) -> tuple[np.ndarray, np.ndarray]:
    """Redraw until the defect shows and stays clear of the label corner (a scratch may run under it,
    a big stain may reach it). Cutting a defect at the corner instead would leave a tell-tale straight
    edge; only if every try touches the corner is the defect cut there, label corner restored.
    """
    label = label_for(size)
    keep = label.keepout
    for attempt in range(_TRIES):
        painted, alpha = spec.defect(image, context, rng, kind, size, label)
        mask = clear_label(alpha >= MASK_ALPHA, label)
        clear = float(alpha[:keep, :keep].max()) < _TOUCH_ALPHA
        if mask.sum() >= _MIN_DEFECT_PIXELS and (clear or attempt == _TRIES - 1):
            painted[:keep, :keep] = image[:keep, :keep]  # no-op unless this is the fallback cut
            return painted, mask
    raise RuntimeError(f"could not place a visible {kind} defect in {_TRIES} tries")  # pragma: no cover
