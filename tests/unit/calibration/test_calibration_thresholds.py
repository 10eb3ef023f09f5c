"""Threshold calibration: targets hit on known arrays, tie rules, degenerate inputs, serialisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cellsight.calibration import Calibration, calibrate_for_escape, calibrate_for_overkill

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
score_arrays = arrays(np.float64, st.integers(1, 60), elements=finite)
# few distinct values: ties everywhere
tied_arrays = arrays(np.float64, st.integers(1, 60), elements=st.sampled_from([0.0, 1.0, 2.5, 2.5, 7.0]))
targets = st.floats(min_value=0.001, max_value=0.999)


def false_calls(good: np.ndarray, cal: Calibration) -> int:
    return int(np.count_nonzero(good >= cal.threshold))


def escapes(defective: np.ndarray, cal: Calibration) -> int:
    return int(np.count_nonzero(defective < cal.threshold))


def test_overkill_twenty_goods_five_percent_allows_exactly_one_false_call() -> None:
    good = np.arange(20, dtype=float)
    cal = calibrate_for_overkill(good, 0.05)
    assert false_calls(good, cal) == 1
    assert cal.threshold == pytest.approx(18.5)  # midpoint of the 2nd-highest (passes) and highest (NG)
    assert (cal.policy, cal.target, cal.n_good, cal.n_defective) == ("overkill", 0.05, 20, 0)


def test_overkill_hundred_goods_ten_percent() -> None:
    good = np.random.default_rng(0).normal(size=100)
    cal = calibrate_for_overkill(good, 0.10)
    assert false_calls(good, cal) == 10
    assert np.sort(good)[-11] < cal.threshold < np.sort(good)[-10]


def test_overkill_ties_at_the_cut_all_pass() -> None:
    good = np.array([0.0] * 10 + [1.0] * 10)
    cal = calibrate_for_overkill(good, 0.05)  # 1 false call allowed, but the top ten are tied
    assert false_calls(good, cal) == 0
    assert cal.threshold == pytest.approx(1.5)


def test_overkill_with_too_few_goods_for_the_target_calls_none_ng() -> None:
    good = np.array([1.0, 2.0, 4.0])
    cal = calibrate_for_overkill(good, 0.05)
    assert false_calls(good, cal) == 0
    assert cal.threshold == pytest.approx(5.0)  # half the last gap (2) above the maximum


def test_escape_picks_highest_threshold_within_target() -> None:
    good = np.linspace(0, 1, 50)
    defective = np.arange(1.0, 11.0)
    cal = calibrate_for_escape(good, defective, 0.2)
    assert cal.threshold == 3.0
    assert escapes(defective, cal) == 2
    assert cal.high == 10.0 and cal.low == 0.0
    assert (cal.policy, cal.n_good, cal.n_defective) == ("escape", 50, 10)


def test_escape_below_one_allowed_miss_catches_every_defective() -> None:
    defective = np.array([3.0, 5.0, 9.0])
    cal = calibrate_for_escape(np.array([0.0, 1.0]), defective, 0.01)
    assert cal.threshold == 3.0 and escapes(defective, cal) == 0


@settings(max_examples=200, deadline=None)
@given(st.one_of(score_arrays, tied_arrays), targets)
def test_overkill_property_target_met_and_threshold_lowest(good: np.ndarray, target: float) -> None:
    cal = calibrate_for_overkill(good, target)
    allowed = math.floor(target * good.size + 1e-9)
    assert false_calls(good, cal) <= allowed
    lower = good[good < cal.threshold]
    if lower.size:  # no good score below the threshold would also have met the target
        assert np.count_nonzero(good >= lower.max()) > allowed
    assert cal.low < cal.threshold < cal.high


@settings(max_examples=200, deadline=None)
@given(st.one_of(score_arrays, tied_arrays), st.one_of(score_arrays, tied_arrays), targets)
def test_escape_property_target_met_and_threshold_highest(
    good: np.ndarray, defective: np.ndarray, target: float
) -> None:
    cal = calibrate_for_escape(good, defective, target)
    allowed = math.floor(target * defective.size + 1e-9)
    assert escapes(defective, cal) <= allowed
    higher = defective[defective > cal.threshold]
    if higher.size:  # the next higher candidate would let too many through
        assert np.count_nonzero(defective < higher.min()) > allowed
    assert cal.low < cal.threshold < cal.high


@pytest.mark.parametrize("value", [0.0, 1.0, -3.5, 1e6, 1e-300])
def test_all_equal_scores_still_give_ordered_span(value: float) -> None:
    same = np.full(7, value)
    for cal in (calibrate_for_overkill(same, 0.05), calibrate_for_escape(same, same, 0.05)):
        assert cal.low < cal.threshold < cal.high
        assert cal.normalise(cal.threshold) == 0.5


def test_escape_threshold_below_every_good_score_keeps_low_below() -> None:
    cal = calibrate_for_escape(np.array([10.0, 11.0, 12.0]), np.array([1.0, 2.0]), 0.1)
    assert cal.threshold == 1.0
    assert cal.low < 1.0 < cal.high


@pytest.mark.parametrize("target", [0.0, 1.0, -0.1, 1.5, float("nan"), True])
def test_targets_outside_open_unit_interval_rejected(target: float) -> None:
    with pytest.raises(ValueError, match="target"):
        calibrate_for_overkill(np.arange(10.0), target)
    with pytest.raises(ValueError, match="target"):
        calibrate_for_escape(np.arange(10.0), np.arange(3.0), target)


def test_empty_and_nan_scores_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        calibrate_for_overkill(np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        calibrate_for_overkill(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="defective_scores is empty"):
        calibrate_for_escape(np.arange(3.0), np.array([]), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        calibrate_for_escape(np.arange(3.0), np.array([np.inf]), 0.1)


def test_normalise_fixed_points_and_clipping() -> None:
    cal = Calibration(
        threshold=2.0, low=1.0, high=4.0, policy="overkill", target=0.05, n_good=9, n_defective=0
    )
    assert cal.normalise(1.0) == 0.0
    assert cal.normalise(1.5) == pytest.approx(0.25)
    assert cal.normalise(2.0) == 0.5
    assert cal.normalise(3.0) == pytest.approx(0.75)
    assert cal.normalise(4.0) == 1.0
    assert cal.normalise(-100.0) == 0.0 and cal.normalise(100.0) == 1.0
    assert isinstance(cal.normalise(3.0), float)
    out = cal.normalise(np.array([[0.0, 2.0], [3.0, 9.0]], dtype=np.float32))
    assert out.dtype == np.float32 and out.shape == (2, 2)
    np.testing.assert_allclose(out, [[0.0, 0.5], [0.75, 1.0]])
    assert math.isnan(cal.normalise(float("nan")))
    assert np.isnan(cal.normalise(np.array([np.nan]))).all()


@st.composite
def calibrations(draw: st.DrawFn) -> Calibration:
    low = draw(finite)
    threshold = low + draw(st.floats(min_value=1e-3, max_value=1e5))
    high = threshold + draw(st.floats(min_value=1e-3, max_value=1e5))
    return Calibration(threshold, low, high, "overkill", 0.05, 10, 0)


@settings(max_examples=200, deadline=None)
@given(calibrations(), arrays(np.float64, st.integers(1, 50), elements=finite))
def test_normalise_monotone_clipped_and_verdict_consistent(cal: Calibration, raw: np.ndarray) -> None:
    just_below = np.nextafter(cal.threshold, -np.inf)
    raw = np.sort(np.concatenate([raw, [cal.low, cal.threshold, cal.high, just_below]]))
    for values in (raw, raw.astype(np.float32)):
        out = cal.normalise(values)
        assert out.dtype == np.float32
        assert np.all(np.diff(out) >= 0)
        assert out.min() >= 0.0 and out.max() <= 1.0
        np.testing.assert_array_equal(out >= 0.5, values.astype(np.float64) >= cal.threshold)
    scalars = np.array([cal.normalise(float(v)) for v in raw])
    assert np.all(np.diff(scalars) >= 0)
    np.testing.assert_array_equal(scalars >= 0.5, raw >= cal.threshold)
    assert cal.normalise(cal.threshold) == 0.5


def test_round_trip_through_dict_and_json() -> None:
    cal = calibrate_for_escape(np.linspace(0, 1, 30), np.linspace(0.8, 3, 12), 0.1)
    data = cal.to_dict()
    assert set(data) == {"threshold", "low", "high", "policy", "target", "n_good", "n_defective"}
    assert Calibration.from_dict(data) == cal
    assert Calibration.from_dict(json.loads(json.dumps(data))) == cal


def test_from_dict_errors_name_the_problem() -> None:
    data = calibrate_for_overkill(np.arange(20.0)).to_dict()
    with pytest.raises(ValueError, match="threshold"):
        Calibration.from_dict({k: v for k, v in data.items() if k != "threshold"})
    with pytest.raises(ValueError, match="low < threshold < high"):
        Calibration.from_dict({**data, "low": data["high"]})
    with pytest.raises(ValueError, match="policy"):
        Calibration.from_dict({**data, "policy": "strict"})
    with pytest.raises(ValueError, match="invalid calibration"):
        Calibration.from_dict({**data, "n_good": "many"})
