"""The GPU path's scoring (half-precision search shortlist, maps by matrices, pixels shrunk on the device),
run here with device=cpu: the same verdicts as the CPU runtime.

Tolerance: on the CPU the path runs its backbone in float32 (torch's CPU half convolutions are emulated
and ~100x slower; the half-precision backbone's own error is bounded in test_features_half_precision), so
everything else must agree to float rounding: |score diff| <= 1e-4 of the threshold, the bar a deployment
must pass (measured: 1.4e-6), and identical verdicts. On a GPU the half-precision backbone moves scores by
up to ~0.7% (measured on the CPU in half: 0.2% near the threshold, 0.7% on a flat image far beyond it);
`benchmarks/gpu.py` counts the CPU-vs-GPU verdicts on the ELPV test split. The search itself is exact on
these sizes (its float32 rescoring returns the flat index's distances).
"""

from __future__ import annotations

import faiss
import numpy as np
import torch

from cellsight.calibration import calibrate_for_overkill
from cellsight.deploy import TOLERANCE
from cellsight.detectors.base import MapSize, TrainingSet
from cellsight.detectors.device_scoring import nearest_squared_distances_half, smoothed_maps
from cellsight.detectors.patchcore import PatchCore


def _cells(rng: np.random.Generator, n: int, defect: bool = False) -> list[np.ndarray]:
    images = []
    for _ in range(n):
        image = (rng.normal(0, 1, (80, 72)) * 8 + np.linspace(90, 150, 72)[None, :]).clip(0, 255)
        if defect:
            y, x = rng.integers(10, 60, 2)
            image[y : y + 10, x : x + 8] = rng.uniform(0, 40)
        images.append(image.astype(np.uint8))
    return images


def test_half_precision_shortlist_then_float32_gives_the_exact_nearest_distance() -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, 64)).astype(np.float32) * 3
    bank = (centres[rng.integers(0, 40, 2000)] + rng.normal(size=(2000, 64)) * 0.3).astype(np.float32)
    bank[1000:1100] = bank[:100]  # duplicates, as coresets of near-identical cells hold
    queries = (centres[rng.integers(0, 40, 500)] + rng.normal(size=(500, 64)) * 0.3).astype(np.float32)
    flat = faiss.IndexFlatL2(bank.shape[1])  # the reference exact scan
    flat.add(bank)
    expected = flat.search(queries, 1)[0][:, 0]
    got = nearest_squared_distances_half(torch.from_numpy(queries), torch.from_numpy(bank), chunk=128).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_device_maps_match_the_cpu_path() -> None:
    import cv2

    scores = torch.from_numpy(np.random.default_rng(0).random((3, 8, 8)).astype(np.float32))
    maps = smoothed_maps(scores, 64, 4.0).numpy()
    for got, patch in zip(maps, scores.numpy(), strict=True):
        expected = cv2.GaussianBlur(cv2.resize(patch, (64, 64), interpolation=cv2.INTER_LINEAR), (0, 0), 4.0)
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_gpu_path_on_the_cpu_gives_the_cpu_runtime_verdicts() -> None:
    rng = np.random.default_rng(5)
    goods, held_out = _cells(rng, 8), _cells(rng, 6)
    tests = _cells(rng, 6) + _cells(rng, 6, defect=True) + [np.zeros((40, 40), np.uint8) + 120]  # one enlarged
    detector = PatchCore(image_size=64, bank_size=128).fit(TrainingSet.good(goods))
    threshold = calibrate_for_overkill(detector.score(held_out).scores, 0.1).threshold
    cpu = detector.score(tests)
    detector.use_device("cpu")
    device = detector.score(tests)
    assert np.abs(device.scores - cpu.scores).max() / threshold <= TOLERANCE
    assert np.array_equal(device.scores >= threshold, cpu.scores >= threshold)
    assert (cpu.scores >= threshold).any() and (cpu.scores < threshold).any()
    assert device.maps is not None and [m.shape for m in device.maps] == [t.shape for t in tests]
    none = detector.score(tests, MapSize.NONE)
    assert none.maps is None and np.array_equal(none.scores, device.scores)
