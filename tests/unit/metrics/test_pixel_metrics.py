"""Pixel AUROC and AUPRO; AUPRO checked against a brute-force threshold sweep."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from scipy import ndimage

from cellsight.metrics import aupro, pixel_auroc, pro_curve


def brute_force_aupro(masks: list[np.ndarray | None], maps: list[np.ndarray], limit: float) -> float:
    """Straight from the MVTec definition: one full pass over all images per threshold."""
    binaries = [np.zeros(a.shape, bool) if m is None else m > 0 for m, a in zip(masks, maps, strict=True)]
    labelled = [ndimage.label(b, structure=np.ones((3, 3)))[0] for b in binaries]
    regions = [(i, r) for i, lab in enumerate(labelled) for r in range(1, lab.max() + 1)]
    n_good = sum(int((~b).sum()) for b in binaries)
    points = [(0.0, 0.0)]
    for t in sorted({float(v) for a in maps for v in a.ravel()}, reverse=True):
        fp = sum(int(((a >= t) & ~b).sum()) for a, b in zip(maps, binaries, strict=True))
        overlaps = [float((maps[i][labelled[i] == r] >= t).mean()) for i, r in regions]
        points.append((fp / n_good, float(np.mean(overlaps))))
    area = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 >= limit:
            break
        if x1 > limit:  # clip the segment at the limit
            y1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            x1 = limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / limit


def random_case(seed: int) -> tuple[list[np.ndarray | None], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    masks: list[np.ndarray | None] = []
    maps = []
    for i in range(4):
        shape = (7, 6)
        if i == 0:
            masks.append(None)
        else:
            masks.append((rng.random(shape) < 0.25).astype(np.uint8) * 255)
        # quantised values: many ties inside and across images
        maps.append(np.round(rng.random(shape) * 8).astype(np.float32) / 8)
    masks[1] = np.zeros((7, 6), np.uint8)
    masks[1][1:3, 1:3] = 1  # at least one region
    return masks, maps


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
def test_aupro_matches_brute_force(seed: int, limit: float) -> None:
    masks, maps = random_case(seed)
    expected = brute_force_aupro(masks, maps, limit)
    assert aupro(masks, maps, fpr_limit=limit) == pytest.approx(expected, abs=1e-9)


def test_aupro_perfect_and_region_weighting() -> None:
    mask = np.zeros((20, 20), np.uint8)
    mask[2:12, 2:12] = 1  # large region: 100 px
    mask[15, 15] = 1  # small region: 1 px
    assert aupro([mask], [mask.astype(np.float32)]) == pytest.approx(1.0)
    # Find only the large region: pixel recall is 100/101, but PRO is 1/2 at FPR 0, then rises
    # linearly to 1 at FPR 1 (the next threshold is the background): mean over [0, 0.3] = 0.575.
    found_large = np.zeros((20, 20), np.float32)
    found_large[2:12, 2:12] = 1
    assert aupro([mask], [found_large]) == pytest.approx(0.575)
    fpr, pro = pro_curve([mask], [found_large])
    np.testing.assert_allclose(fpr, [0, 0, 1])
    np.testing.assert_allclose(pro, [0, 0.5, 1])
    assert fpr[0] == 0 and pro[0] == 0 and fpr[-1] == pytest.approx(1) and pro[-1] == pytest.approx(1)


def test_aupro_nan_without_regions_or_without_good_pixels() -> None:
    maps = [np.random.default_rng(1).random((5, 5)).astype(np.float32)]
    assert math.isnan(aupro([None], maps))
    assert math.isnan(aupro([np.ones((5, 5))], maps))
    assert math.isnan(aupro([], []))
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro([None], maps, fpr_limit=0.0)


def test_pixel_auroc_perfect_with_none_masks_and_resized_maps() -> None:
    mask = np.zeros((8, 8), np.uint8)
    mask[0:4, 0:4] = 255
    small_map = np.zeros((4, 4), np.float32)
    small_map[0:2, 0:2] = 1.0  # half resolution: resized to the mask
    good_map = np.full((8, 8), 0.1, np.float32)
    assert pixel_auroc([mask, None], [small_map, good_map]) == 1.0
    assert aupro([mask, None], [small_map, good_map]) == pytest.approx(1.0)
    assert pixel_auroc([mask], [1.0 - small_map]) == 0.0


def test_pixel_auroc_nan_and_errors() -> None:
    assert math.isnan(pixel_auroc([None, None], [np.zeros((3, 3)), np.ones((3, 3))]))
    with pytest.raises(ValueError, match="masks"):
        pixel_auroc([None], [np.zeros((3, 3)), np.zeros((3, 3))])
    with pytest.raises(ValueError, match="2-D"):
        pixel_auroc([None], [np.zeros((3, 3, 3))])


def test_rgb_mask_is_binarised() -> None:
    mask = np.zeros((6, 6, 3), np.uint8)
    mask[1:3, 1:3, 0] = 200
    amap = (mask[:, :, 0] > 0).astype(np.float32)
    assert pixel_auroc([mask], [amap]) == 1.0


def test_aupro_is_fast_on_a_hundred_256px_images() -> None:
    rng = np.random.default_rng(3)
    masks: list[np.ndarray | None] = []
    maps = []
    for i in range(100):
        amap = rng.random((256, 256), dtype=np.float32)
        mask = None
        if i % 2:
            mask = np.zeros((256, 256), np.uint8)
            mask[40 + i : 80 + i, 30:90] = 1
            mask[200:205, 200:230] = 1
            amap[mask > 0] += 1.0  # fully separated: AUPRO 1
        masks.append(mask)
        maps.append(amap)
    start = time.perf_counter()
    value = aupro(masks, maps)
    elapsed = time.perf_counter() - start
    assert value == pytest.approx(1.0)
    assert elapsed < 10.0, f"aupro took {elapsed:.1f}s"  # ~0.5 s on a busy 2-core box


def test_failed_map_values_rank_as_most_anomalous() -> None:
    mask = np.zeros((4, 4), np.uint8)
    mask[0, 0] = 1
    amap = np.zeros((4, 4), np.float32)
    amap[0, 0] = np.nan
    assert pixel_auroc([mask], [amap]) == 1.0
    assert aupro([mask], [amap]) == pytest.approx(1.0)
