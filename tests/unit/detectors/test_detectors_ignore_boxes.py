"""Ignore boxes: a region the model must not judge (a code label) cannot raise a score; elsewhere nothing changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellsight.data import LazyImages, load_mvtec
from cellsight.detectors.base import TrainingSet
from cellsight.detectors.ignore import blank_boxes, check_boxes
from cellsight.detectors.patchcore import PatchCore
from cellsight.errors import ConfigError


def test_boxes_are_checked_and_named_when_wrong() -> None:
    assert check_boxes([[0, 0, 0.5, 0.25]]) == ((0.0, 0.0, 0.5, 0.25),)
    for bad in ([0, 0, 1], [0.5, 0, 0.4, 1], [0, 0, 1.2, 1]):
        with pytest.raises(ValueError, match="ignore box"):
            check_boxes([bad])


def test_blank_boxes_sets_the_box_to_the_map_minimum_only() -> None:
    rng = np.random.default_rng(0)
    anomaly = rng.uniform(1, 2, (40, 80)).astype(np.float32)
    out = blank_boxes(anomaly, check_boxes([[0, 0, 0.25, 0.5]]))
    assert np.all(out[:20, :20] == anomaly.min())
    np.testing.assert_array_equal(out[:, 20:], anomaly[:, 20:])
    np.testing.assert_array_equal(out[20:, :], anomaly[20:, :])


@pytest.fixture(scope="module")
def fitted_pair(tiny_mvtec: Path) -> tuple[PatchCore, PatchCore, list[np.ndarray]]:
    train = LazyImages(load_mvtec(tiny_mvtec).select(split="train").paths)
    small = {"image_size": 96, "bank_size": 512, "batch_size": 8}
    plain = PatchCore(**small).fit(TrainingSet.good(train))
    masked = PatchCore(**small, ignore_boxes=[[0, 0, 0.3, 0.3]]).fit(TrainingSet.good(train))
    return plain, masked, [train[0], train[1]]


def test_a_mark_inside_the_box_does_not_raise_the_score(fitted_pair: tuple[PatchCore, PatchCore, list]) -> None:
    plain, masked, goods = fitted_pair
    marked = goods[0].copy()
    marked[5:22, 5:22] = 255  # a bright label where the station's code sits
    plain_scores = plain.score([goods[0], marked]).scores
    masked_scores, maps = masked.score([goods[0], marked]).scores, masked.score([marked]).maps or []
    assert plain_scores[1] > 1.5 * plain_scores[0]  # without the box the label is "the defect"
    assert masked_scores[1] < 1.2 * masked_scores[0]
    assert maps[0][:25, :25].max() == maps[0].min()


def test_a_defect_outside_the_box_is_still_found(fitted_pair: tuple[PatchCore, PatchCore, list]) -> None:
    plain, masked, goods = fitted_pair
    marked = goods[1].copy()
    marked[60:75, 60:75] = 255
    plain_scores = plain.score([goods[1], marked]).scores
    masked_scores = masked.score([goods[1], marked]).scores
    assert masked_scores[1] > 1.5 * masked_scores[0]
    assert masked_scores[1] == pytest.approx(plain_scores[1], rel=0.05)  # banks differ only near the box


def test_boxes_travel_with_the_model_state(fitted_pair: tuple[PatchCore, PatchCore, list]) -> None:
    _, masked, goods = fitted_pair
    again = PatchCore.from_state(masked.config(), masked.tensors())
    assert again.settings.ignore_boxes == masked.settings.ignore_boxes == ((0.0, 0.0, 0.3, 0.3),)
    np.testing.assert_array_equal(again.score(goods).scores, masked.score(goods).scores)


def test_a_wrong_box_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="ignore box"):
        PatchCore(ignore_boxes=[[0.5, 0, 0.4, 1]])
