"""Tiling for line-scan images: tiles at native resolution, blended back without seams or blind borders."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cellsight.detectors.base import TrainingSet
from cellsight.detectors.patchcore import PatchCore
from cellsight.detectors.tiling import TileGrid, feather_weights, tile_origins
from cellsight.errors import ConfigError

TILE, OVERLAP = 256, 32


def test_tiles_cover_the_axis_with_the_overlap_and_end_flush() -> None:
    assert tile_origins(2048, TILE, OVERLAP) == list(range(0, 1793, 224))
    assert tile_origins(512, TILE, OVERLAP) == [0, 224, 256]  # last tile flush with the edge
    assert tile_origins(100, TILE, OVERLAP) == [0]


def test_stitching_a_constant_gives_the_constant_and_small_images_are_padded() -> None:
    grid = TileGrid(300, 700, TILE, OVERLAP)
    stitched = grid.stitch([np.full((TILE, TILE), 3.0, np.float32) for _ in grid.origins])
    np.testing.assert_allclose(stitched, 3.0, rtol=1e-6)
    assert stitched.shape == (300, 700)
    small = TileGrid(100, 60, TILE, OVERLAP)
    (tile,) = small.cut(np.zeros((100, 60), np.uint8))
    assert tile.shape == (TILE, TILE)
    assert small.stitch([np.ones((TILE, TILE), np.float32)]).shape == (100, 60)


def test_feather_weights_favour_the_tile_interior() -> None:
    weights = feather_weights(TILE, OVERLAP)
    assert weights.min() > 0.0
    assert weights[TILE // 2, TILE // 2] == 1.0 and weights[0, TILE // 2] < 0.05


def _web(rng: np.random.Generator, height: int = 512, width: int = 2048) -> np.ndarray:
    """A coating web: fine isotropic grain, machine-direction stripes and a slow gain drift across the web."""
    grain = cv2.GaussianBlur(rng.normal(0.0, 1.0, (height, width)).astype(np.float32), (0, 0), 1.5)
    x = np.arange(width, dtype=np.float32)
    image = 128.0 + 14.0 * grain / grain.std() + 8.0 * np.sin(2 * np.pi * x / 24)[None, :] + 0.01 * x[None, :]
    return np.clip(image, 0, 255).astype(np.uint8)


# On tile edges and corners of the 256/32 grid (x starts 0, 224, ..., 1792; y starts 0, 224, 256):
DEFECTS = [
    (256, 120),  # the right edge of the first tile
    (672, 400),  # the left edge of the fourth tile
    (1120, 224),  # a tile's top-left corner
    (1600, 256),  # a corner where the first row's tiles end and the last row's begin
]


@pytest.fixture(scope="module")
def scored() -> tuple[PatchCore, list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    detector = PatchCore(tile_size=TILE, tile_overlap=OVERLAP, bank_size=1024, per_image_fraction=0.05)
    detector.fit(TrainingSet.good([_web(rng) for _ in range(2)]))
    good = [_web(rng)]
    defective = _web(rng)
    for x, y in DEFECTS:
        cv2.circle(defective, (x, y), 6, 30, -1)
    out = detector.score([*good, defective])
    assert out.maps is not None
    return detector, out.maps, out.scores


def test_defects_on_tile_borders_and_corners_are_found(
    scored: tuple[PatchCore, list[np.ndarray], np.ndarray],
) -> None:
    _, maps, scores = scored
    *good_maps, defect_map = maps
    assert defect_map.shape == (512, 2048)
    good_max = max(float(m.max()) for m in good_maps)
    assert scores[-1] > max(scores[:-1])
    for x, y in DEFECTS:
        window = defect_map[y - 64 : y + 64, x - 64 : x + 64]
        peak_y, peak_x = np.unravel_index(int(window.argmax()), window.shape)
        assert abs(peak_x - 64) <= 8 and abs(peak_y - 64) <= 8, (x, y)  # the map peaks on the defect
        assert window.max() > 1.2 * good_max, (x, y)  # and stands above anything on a good web


def test_stitching_leaves_no_seams_on_a_good_web(scored: tuple[PatchCore, list[np.ndarray], np.ndarray]) -> None:
    """Within 4 px of an inner tile edge, scores are no higher than inside tiles (5% margin; measured ~2-3%)."""
    _, maps, _ = scored
    grid = TileGrid(512, 2048, TILE, OVERLAP)
    band = np.zeros((512, 2048), dtype=bool)
    for y, x in grid.origins:
        for edge in (x, x + TILE):
            if 0 < edge < 2048:
                band[:, edge - 4 : edge + 4] = True
        for edge in (y, y + TILE):
            if 0 < edge < 512:
                band[edge - 4 : edge + 4, :] = True
    for good_map in maps[:-1]:
        assert good_map[band].mean() <= 1.05 * good_map[~band].mean()
        assert good_map[band].max() <= 1.05 * good_map[~band].max()


def test_tiling_settings_are_validated_and_stored(scored: tuple[PatchCore, list[np.ndarray], np.ndarray]) -> None:
    detector, _, _ = scored
    with pytest.raises(ConfigError, match="tile_overlap"):
        PatchCore(tile_size=64, tile_overlap=32)
    settings = detector.config()["settings"]
    assert isinstance(settings, dict) and (settings["tile_size"], settings["tile_overlap"]) == (TILE, OVERLAP)
    rebuilt = PatchCore.from_state(detector.config(), detector.tensors())
    assert rebuilt.settings.tile_size == TILE and rebuilt.features.image_size == TILE
