"""The good-only detectors on a tiny generated station: they must rank defects above good parts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellsight.calibration import calibrate_for_overkill
from cellsight.data import LazyImages, load_mvtec
from cellsight.detectors.base import AnyDetector, MapSize, NotCalibratedError, TrainingSet
from cellsight.detectors.registry import detector_class, detector_names
from cellsight.metrics import image_auroc
from cellsight.types import Verdict

SMALL = {
    "patchcore": {"image_size": 96, "bank_size": 512, "batch_size": 8},
    "classical": {"image_size": 96},
    "simplenet": {"image_size": 96, "hidden": 128, "steps": 200, "batch_patches": 512, "batch_size": 8},
}


@pytest.fixture(scope="module", params=list(SMALL))
def fitted(request: pytest.FixtureRequest, tiny_mvtec: Path) -> tuple[AnyDetector, object]:
    dataset = load_mvtec(tiny_mvtec)
    detector = detector_class(request.param)(**SMALL[request.param])
    detector.fit(TrainingSet.good(LazyImages(dataset.select(split="train").paths)))
    return detector, dataset


def test_registry_lists_the_good_only_detectors() -> None:
    assert set(SMALL) <= set(detector_names())
    with pytest.raises(ValueError, match="known detectors"):
        detector_class("nope")


def test_defects_score_higher_than_good_parts(fitted: tuple[AnyDetector, object]) -> None:
    detector, dataset = fitted
    test = dataset.select(split="test")  # type: ignore[attr-defined]
    out = detector.score(list(LazyImages(test.paths)))
    scores, maps = out.scores, out.maps
    assert maps is not None and out.classes is None
    assert image_auroc(test.labels, scores) >= 0.9
    for image_map, path in zip(maps, test.paths, strict=True):
        assert image_map.shape == (96, 96), path  # maps come back at the input image's size
        assert image_map.dtype == np.float32


def test_anomaly_map_peaks_on_the_defect(fitted: tuple[AnyDetector, object]) -> None:
    from cellsight.data import read_image

    detector, dataset = fitted
    item = dataset.select(split="test", defect_class="spot").items[0]  # type: ignore[attr-defined]
    (anomaly_map,) = detector.score([read_image(item.path)]).maps or []
    mask = read_image(item.mask_path) > 0
    assert anomaly_map[mask].mean() > anomaly_map[~mask].mean()


def test_predict_needs_calibration_and_then_gives_verdicts(fitted: tuple[AnyDetector, object]) -> None:
    detector, dataset = fitted
    test = dataset.select(split="test")  # type: ignore[attr-defined]
    images = list(LazyImages(test.paths))
    detector.calibration = None
    with pytest.raises(NotCalibratedError):
        detector.predict(images)
    good_scores = detector.score(images[: test.labels.count(0)]).scores
    detector.calibration = calibrate_for_overkill(good_scores, 0.2)
    predictions = detector.predict(images)
    for prediction in predictions:
        assert (prediction.verdict is Verdict.NG) == (prediction.score >= 0.5)
        assert prediction.anomaly_map is not None and prediction.anomaly_map.max() <= 1.0
    assert sum(p.verdict is Verdict.NG for p in predictions) >= test.labels.count(1) // 2


def test_state_round_trip_reproduces_scores_exactly(fitted: tuple[AnyDetector, object]) -> None:
    detector, dataset = fitted
    images = list(LazyImages(dataset.select(split="test").paths[:6]))  # type: ignore[attr-defined]
    rebuilt = type(detector).from_state(detector.config(), detector.tensors())
    np.testing.assert_array_equal(detector.score(images).scores, rebuilt.score(images).scores)


def test_any_image_type_is_accepted_after_fitting(fitted: tuple[AnyDetector, object]) -> None:
    detector, _ = fitted
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 65535, (120, 80), dtype=np.uint16),  # 16-bit gray, other size and aspect
        rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),  # RGB
    ]
    out = detector.score(images)
    assert np.isfinite(out.scores).all()
    assert out.maps is not None and [m.shape for m in out.maps] == [(120, 80), (64, 64)]


def test_maps_come_at_the_size_asked_for(fitted: tuple[AnyDetector, object]) -> None:
    """None (fastest), the working size, or each input's size; the scores are the same either way."""
    detector, _ = fitted
    images = [np.full((120, 80), 128, np.uint8), np.full((64, 64), 90, np.uint8)]
    full = detector.score(images, MapSize.INPUT)
    working = detector.score(images, MapSize.WORKING)
    none = detector.score(images, MapSize.NONE)
    np.testing.assert_array_equal(full.scores, none.scores)
    np.testing.assert_array_equal(full.scores, working.scores)
    assert none.maps is None and working.maps is not None
    assert [m.shape for m in working.maps] == [(96, 96), (96, 96)]  # SMALL's image_size
