"""The GPU path's threaded per-image steps give exactly what the serial loop gives (checked on the CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from cellsight.detectors.base import TrainingSet
from cellsight.detectors.patchcore import PatchCore
from cellsight.features.extractor import PatchFeatureExtractor
from cellsight.features.threads import gpu_workers, map_images


def test_map_images_keeps_order() -> None:
    items = list(range(50))
    assert map_images(lambda x: x * x, items, workers=4) == [x * x for x in items]
    assert map_images(lambda x: x + 1, [], workers=4) == []
    assert gpu_workers() >= 1


def test_threaded_patchcore_scores_equal_the_serial_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    goods = [(rng.random((80, 72)) * 60 + 100).astype(np.uint8) for _ in range(6)]
    tests = [image.copy() for image in goods[:3]] + [(rng.random((90, 70)) * 255).astype(np.uint8)]
    detector = PatchCore(image_size=64, bank_size=64, search="exact", runtime="torch").fit(TrainingSet.good(goods))
    serial = detector.score(tests)
    monkeypatch.setattr(PatchFeatureExtractor, "workers", property(lambda self: 4))
    threaded = detector.score(tests)
    assert serial.maps is not None and threaded.maps is not None
    np.testing.assert_array_equal(threaded.scores, serial.scores)
    for a, b in zip(threaded.maps, serial.maps, strict=True):
        np.testing.assert_array_equal(a, b)
    assert threaded.maps[-1].shape == (90, 70)
