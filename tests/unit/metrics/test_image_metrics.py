"""Image-level metrics on small cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cellsight.metrics import average_precision, f1_max, image_auroc

LABELS = [0, 0, 1, 1]
SCORES = [0.1, 0.4, 0.35, 0.8]


def test_known_small_case() -> None:
    # 4 good/defective pairs, 3 ranked correctly → 0.75
    assert image_auroc(LABELS, SCORES) == pytest.approx(0.75)
    # precision at the two positives: 1/1 at 0.8, 2/3 at 0.35 → (1 + 2/3) / 2
    assert average_precision(LABELS, SCORES) == pytest.approx(5 / 6)
    f1, threshold = f1_max(LABELS, SCORES)
    assert f1 == pytest.approx(0.8)  # P = 2/3, R = 1
    assert threshold == pytest.approx(0.35)


def test_perfect_and_inverted_rankings() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.9])
    assert image_auroc(labels, scores) == 1.0
    assert image_auroc(labels, -scores) == 0.0
    assert average_precision(labels, scores) == 1.0
    assert f1_max(labels, scores) == (1.0, pytest.approx(0.7))


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1], []])
def test_one_class_gives_nan_not_an_error(labels: list[int]) -> None:
    scores = np.linspace(0, 1, len(labels))
    assert math.isnan(image_auroc(labels, scores))
    assert math.isnan(average_precision(labels, scores))
    f1, threshold = f1_max(labels, scores)
    assert math.isnan(f1) and math.isnan(threshold)


def test_failed_image_ranks_as_most_anomalous() -> None:
    assert image_auroc([0, 0, 1], [0.1, 0.2, float("nan")]) == 1.0
    assert image_auroc([0, 1, 1], [float("nan"), 0.2, 0.3]) == 0.0


def test_bad_inputs_rejected() -> None:
    with pytest.raises(ValueError, match="0 \\(good\\) or 1"):
        image_auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="labels"):
        image_auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        average_precision([0, 1], [0.1, float("inf")])
