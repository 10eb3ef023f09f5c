"""Defect naming: a good-only PatchCore learns class names from a few labelled defects, without changing scores."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cellsight.calibration import calibrate_for_overkill
from cellsight.detectors.base import MapSize, TrainingSet
from cellsight.detectors.naming import UNKNOWN, DefectNamer
from cellsight.detectors.patchcore import PatchCore
from cellsight.modelfile import load_model, save_model
from cellsight.types import Verdict

SIZE = 96


def good(rng: np.random.Generator) -> np.ndarray:
    image = 140.0 + rng.normal(0.0, 4.0, (SIZE, SIZE))
    image[:: SIZE // 8, :] -= 25.0
    return np.clip(image, 0, 255).astype(np.uint8)


def defective(rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Three clearly different kinds: a thin dark line, a dark disc, a bright square."""
    image, mask = good(rng), np.zeros((SIZE, SIZE), np.uint8)
    cx, cy = (int(v) for v in rng.integers(28, 68, 2))
    if kind == "crack":
        angle = rng.uniform(0, np.pi)
        dx, dy = int(np.cos(angle) * 22), int(np.sin(angle) * 22)
        cv2.line(mask, (cx - dx, cy - dy), (cx + dx, cy + dy), 255, 2)
        image[mask > 0] = 20
    elif kind == "spot":
        cv2.circle(mask, (cx, cy), 9, 255, -1)
        image[mask > 0] //= 4
    else:
        mask[cy - 7 : cy + 7, cx - 7 : cx + 7] = 255
        image[mask > 0] = 250
    return image, mask


@pytest.fixture(scope="module")
def named() -> tuple[PatchCore, dict[str, list[np.ndarray]]]:
    """A detector fitted on goods, taught crack and spot from 6 examples each; held-out images per kind."""
    rng = np.random.default_rng(3)
    goods = [good(rng) for _ in range(20)]
    calibration_goods = [good(rng) for _ in range(10)]
    train = [defective(rng, kind) for kind in ("crack", "spot") for _ in range(6)]
    classes = ["crack"] * 6 + ["spot"] * 6
    train_set = TrainingSet(
        goods + [image for image, _ in train], [0] * 20 + [1] * 12, ["good"] * 20 + classes,
        [None] * 20 + [mask for _, mask in train],
    )
    detector = PatchCore(image_size=SIZE, bank_size=512, batch_size=8).fit(train_set)
    detector.calibration = calibrate_for_overkill(detector.score(calibration_goods).scores, 0.1)
    held = {kind: [defective(rng, kind)[0] for _ in range(6)] for kind in ("crack", "spot", "bright")}
    return detector, held


def names_of(detector: PatchCore, images: list[np.ndarray]) -> list[str | None]:
    names = detector.score(images, MapSize.NONE, name_from=-np.inf).classes  # name every image
    assert names is not None
    return names


def test_the_bank_is_learned_from_the_goods_alone(named: tuple[PatchCore, dict[str, list[np.ndarray]]]) -> None:
    """Adding labelled defects to the training set names what is flagged; the bank and scores stay the same."""
    detector, _ = named
    rng = np.random.default_rng(3)
    goods = TrainingSet.good([good(rng) for _ in range(20)])
    plain = PatchCore(image_size=SIZE, bank_size=512, batch_size=8).fit(goods)
    assert plain.namer is None and detector.memory_bank is not None
    np.testing.assert_array_equal(plain.memory_bank, detector.memory_bank)


def test_held_out_defects_get_their_class(named: tuple[PatchCore, dict[str, list[np.ndarray]]]) -> None:
    detector, held = named
    for kind in ("crack", "spot"):
        names = names_of(detector, held[kind])
        assert np.mean([n == kind for n in names]) >= 0.8, (kind, names)


def test_a_kind_never_taught_is_unknown(named: tuple[PatchCore, dict[str, list[np.ndarray]]]) -> None:
    detector, held = named
    names = names_of(detector, held["bright"])
    assert np.mean([n == UNKNOWN for n in names]) >= 0.8, names


def test_predict_names_ng_only_and_scores_do_not_change(named: tuple[PatchCore, dict[str, list[np.ndarray]]]) -> None:
    detector, held = named
    rng = np.random.default_rng(99)
    images = [good(rng), held["crack"][0], held["spot"][0]]
    predictions = detector.predict(images)
    assert [p.verdict for p in predictions] == [Verdict.OK, Verdict.NG, Verdict.NG]
    assert [p.defect_class for p in predictions] == [None, "crack", "spot"]
    namer, detector.namer = detector.namer, None
    try:
        plain = detector.predict(images)
    finally:
        detector.namer = namer
    assert [p.defect_class for p in plain] == [None, "anomaly", "anomaly"]
    assert [p.raw_score for p in plain] == [p.raw_score for p in predictions]


def test_model_file_round_trip_names_identically(named: tuple[PatchCore, dict[str, list[np.ndarray]]],
                                                 tmp_path: Path) -> None:
    detector, held = named
    images = held["crack"] + held["spot"] + held["bright"]
    save_model(tmp_path / "m.safetensors", detector, training={})
    loaded = load_model(tmp_path / "m.safetensors").detector
    assert isinstance(loaded, PatchCore) and loaded.namer is not None
    assert loaded.config()["state"] == detector.config()["state"]
    assert names_of(loaded, images) == names_of(detector, images)


def test_model_file_without_a_namer_loads_and_says_anomaly(named: tuple[PatchCore, dict[str, list[np.ndarray]]],
                                                          tmp_path: Path) -> None:
    """A model file written before defect naming: no namer in its config or tensors."""
    detector, held = named
    namer, detector.namer = detector.namer, None
    try:
        assert "defect_namer" not in detector.fitted_config()
        assert not any(name.startswith("namer.") for name in detector.tensors())
        save_model(tmp_path / "old.safetensors", detector, training={})
    finally:
        detector.namer = namer
    loaded = load_model(tmp_path / "old.safetensors").detector
    assert isinstance(loaded, PatchCore) and loaded.namer is None
    (prediction,) = loaded.predict(held["spot"][:1])
    assert prediction.verdict is Verdict.NG and prediction.defect_class == "anomaly"


def test_only_images_at_or_above_name_from_are_named(named: tuple[PatchCore, dict[str, list[np.ndarray]]]) -> None:
    detector, held = named
    images = [held["crack"][0], held["spot"][0]]
    scores = detector.score(images, MapSize.NONE).scores
    cut = float(scores.max())
    classes = detector.score(images, MapSize.NONE, name_from=cut).classes
    assert classes is not None and [c is None for c in classes] == [float(s) < cut for s in scores]
    assert detector.score(images, MapSize.NONE).classes is None  # nothing asked, nothing named


def test_namer_threshold_comes_from_leave_one_out() -> None:
    rng = np.random.default_rng(0)
    centers = np.eye(8, dtype=np.float32)[:2] * 5
    descriptors = np.concatenate([c + rng.normal(0, 0.3, (10, 8)).astype(np.float32) for c in centers])
    namer = DefectNamer.fit(descriptors, ["a"] * 10 + ["b"] * 10, np.zeros(8, np.float32), "mean")
    own, loo_names = namer.leave_one_out()
    assert namer.unknown_distances.tolist() == pytest.approx([own[:10].max(), own[10:].max()])
    assert loo_names == ["a"] * 10 + ["b"] * 10
    assert namer.name(np.eye(8, dtype=np.float32)[[0, 1, 5]] * 5) == ["a", "b", UNKNOWN]
    with pytest.raises(ValueError, match="method"):
        DefectNamer.fit(descriptors, ["a"] * 20, np.zeros(8, np.float32), "svm")
