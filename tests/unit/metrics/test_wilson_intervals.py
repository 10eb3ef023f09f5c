"""Wilson score intervals against published values."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from cellsight.metrics import wilson_interval


@pytest.mark.parametrize(
    ("successes", "n", "expected"),
    [
        (0, 10, (0.0, 0.2775)),
        (5, 10, (0.2366, 0.7634)),
        (10, 10, (0.7225, 1.0)),
        (1, 20, (0.0089, 0.2361)),
    ],
)
def test_known_values(successes: int, n: int, expected: tuple[float, float]) -> None:
    low, high = wilson_interval(successes, n)
    assert low == pytest.approx(expected[0], abs=1e-4)
    assert high == pytest.approx(expected[1], abs=1e-4)


def test_edges_are_exact_and_empty_is_uninformative() -> None:
    assert wilson_interval(0, 7)[0] == 0.0
    assert wilson_interval(7, 7)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wider_z_gives_wider_interval() -> None:
    narrow = wilson_interval(3, 40, z=1.0)
    wide = wilson_interval(3, 40)
    assert wide[0] < narrow[0] < 3 / 40 < narrow[1] < wide[1]


@pytest.mark.parametrize(("successes", "n"), [(-1, 5), (6, 5), (0, -1)])
def test_impossible_counts_rejected(successes: int, n: int) -> None:
    with pytest.raises(ValueError):
        wilson_interval(successes, n)


@pytest.mark.parametrize(("successes", "n"), [(25, 204), (0, 3), (1, 1), (17, 1000), (499, 500)])
def test_matches_scipy_wilson(successes: int, n: int) -> None:
    reference = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(successes, n) == pytest.approx((reference.low, reference.high), abs=1e-6)
