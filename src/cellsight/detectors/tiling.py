"""Overlapping tiles at native resolution for large images (line-scan webs), and seamless stitching.

A 8192x2048 coating web resized to 256x256 would shrink a 1 mm defect below one pixel; instead the
image is cut into tiles of the backbone's working size at native resolution, each scored on its own,
and the tile maps are put back together.

Stitching is a feathered (weighted) blend, not a max over the overlaps: each tile's weight ramps from
~0 at its edges to 1 at `overlap` pixels inside, so wherever tiles overlap, the tile that sees a pixel
from its interior (full context, no zero padding) dominates, and a defect on one tile's border is scored
by the neighbour that holds it well inside. A max would instead keep every tile's border artefacts and,
being the max of two to four noisy estimates, raise good areas along the overlaps: seams (overkill).
The weights are normalised per pixel, so where one tile alone covers a pixel its value is kept as is.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis: stride `tile - overlap`, the last tile flush with the far edge."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, tile - overlap))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one image lie. Images smaller than a tile are padded (reflected) to it."""

    height: int
    width: int
    tile: int
    overlap: int

    @property
    def origins(self) -> list[tuple[int, int]]:
        """(y, x) of every tile's top-left corner, row by row."""
        ys = tile_origins(self.height, self.tile, self.overlap)
        xs = tile_origins(self.width, self.tile, self.overlap)
        return [(y, x) for y in ys for x in xs]

    def cut(self, image: np.ndarray) -> list[np.ndarray]:
        """The tiles of `image` (views where no padding is needed), each `tile` x `tile`."""
        padded = _pad_to(image, self.tile)
        return [padded[y : y + self.tile, x : x + self.tile] for y, x in self.origins]

    def stitch(self, tile_maps: list[np.ndarray]) -> np.ndarray:
        """Blend per-tile maps (each `tile` x `tile`) into one (height, width) float32 map."""
        full_h, full_w = max(self.height, self.tile), max(self.width, self.tile)
        total = np.zeros((full_h, full_w), dtype=np.float32)
        weight_sum = np.zeros((full_h, full_w), dtype=np.float32)
        weights = feather_weights(self.tile, self.overlap)
        for (y, x), tile_map in zip(self.origins, tile_maps, strict=True):
            total[y : y + self.tile, x : x + self.tile] += weights * tile_map
            weight_sum[y : y + self.tile, x : x + self.tile] += weights
        return (total / weight_sum)[: self.height, : self.width]


def feather_weights(tile: int, overlap: int) -> np.ndarray:
    """(tile, tile) weights: a linear ramp over `overlap` pixels from each edge, 1 inside; never 0."""
    distance = np.minimum(np.arange(tile), np.arange(tile)[::-1]).astype(np.float32)
    ramp = np.minimum((distance + 1.0) / (overlap + 1.0), 1.0)
    return np.outer(ramp, ramp).astype(np.float32)


def _pad_to(image: np.ndarray, tile: int) -> np.ndarray:
    height, width = image.shape[:2]
    if height >= tile and width >= tile:
        return image
    bottom, right = max(0, tile - height), max(0, tile - width)
    return cv2.copyMakeBorder(image, 0, bottom, 0, right, cv2.BORDER_REFLECT_101)
