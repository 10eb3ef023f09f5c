"""The cost-optimal threshold against the closed-form optimum on known score distributions."""

from __future__ import annotations

import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from cellsight.calibration import calibrate_for_cost, cost_optimal_threshold
from cellsight.calibration.cost_model import load_costs
from cellsight.errors import ConfigError


def _quantiles(dist: NormalDist, n: int) -> np.ndarray:
    """n scores spread exactly like the distribution (its quantiles at (i + 0.5) / n): no sampling noise."""
    return np.asarray([dist.inv_cdf((i + 0.5) / n) for i in range(n)])


@pytest.mark.parametrize(
    ("mu", "defect_rate", "false_call", "escape"),
    [(2.0, 0.1, 1.0, 20.0), (3.0, 0.02, 5.0, 40.0), (1.5, 0.3, 2.0, 1.0)],
)
def test_the_threshold_is_the_likelihood_ratio_optimum_for_two_normals(
    mu: float, defect_rate: float, false_call: float, escape: float
) -> None:
    # good ~ N(0, 1), defective ~ N(mu, 1): C'(t) = 0 where (1-p) c_fc phi(t) = p c_esc phi(t - mu), so
    # t* = mu / 2 + ln((1 - p) c_fc / (p c_esc)) / mu
    analytic = mu / 2 + math.log((1 - defect_rate) * false_call / (defect_rate * escape)) / mu
    good, defective = _quantiles(NormalDist(0, 1), 20_000), _quantiles(NormalDist(mu, 1), 20_000)
    found = cost_optimal_threshold(good, defective, false_call, escape, defect_rate)
    assert found.threshold == pytest.approx(analytic, abs=0.02)
    # and its cost is the analytic minimum cost
    cost = (1 - defect_rate) * false_call * (1 - NormalDist().cdf(analytic)) + defect_rate * escape * NormalDist(
        mu, 1).cdf(analytic)
    assert found.expected_cost == pytest.approx(cost, rel=1e-3)


def test_exponential_scores_match_their_closed_form() -> None:
    # good ~ Exp(rate 2), defective = 1 + Exp(rate 1): C(t) for t >= 1 is (1-p) a e^{-2t} + p b (1 - e^{-(t-1)}),
    # minimum where 2 (1-p) a e^{-2t} = p b e^{-(t-1)}: t* = ln(2 (1-p) a / (p b e)) ... solved for e^{-t}
    p, a, b = 0.05, 10.0, 3.0
    n = 40_000
    u = (np.arange(n) + 0.5) / n
    good, defective = -np.log(1 - u) / 2.0, 1.0 - np.log(1 - u)
    analytic = math.log(2 * (1 - p) * a / (p * b * math.e))
    assert analytic > 1.0  # the optimum lies where both distributions overlap
    found = cost_optimal_threshold(good, defective, a, b, p)
    assert found.threshold == pytest.approx(analytic, abs=0.02)


def test_a_flat_optimum_takes_the_middle_of_the_gap() -> None:
    good, defective = np.array([0.0, 1.0, 2.0]), np.array([10.0, 11.0])
    found = cost_optimal_threshold(good, defective, 1.0, 1.0, 0.5)
    assert found.threshold == 6.0 and found.false_calls == 0 and found.escapes == 0 and found.expected_cost == 0.0


def test_calibration_puts_the_cost_threshold_at_half() -> None:
    rng = np.random.default_rng(3)
    good, defective = rng.normal(0, 1, 400), rng.normal(3, 1, 100)
    calibration, optimum = calibrate_for_cost(good, defective, 1.0, 30.0, 0.05)
    assert calibration.policy == "cost" and calibration.target == 0.05
    assert calibration.normalise(optimum.threshold) == 0.5
    assert type(calibration).from_dict(calibration.to_dict()) == calibration


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ConfigError, match="defect rate"):
        cost_optimal_threshold(np.zeros(3), np.ones(3), 1.0, 1.0, 0.0)
    with pytest.raises(ConfigError, match="not both 0"):
        cost_optimal_threshold(np.zeros(3), np.ones(3), 0.0, 0.0, 0.1)


def test_cost_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "costs.yaml"
    path.write_text("co2e_kg_per_kwh: 0.4\nescape: -1\nend_of_line: {value_added: 10, energy_kwh: 1}\n"
                    "stations: {weld: {value_added: 12, energy_kwh: 0.1}}\n")
    with pytest.raises(ConfigError) as caught:
        load_costs(path)
    message = str(caught.value)
    assert str(path) in message and "escape" in message and "stations" not in message.split("escape")[0]
    path.write_text("co2e_kg_per_kwh: 0.4\nescape: 40\nend_of_line: {value_added: 10, energy_kwh: 1}\n"
                    "stations: {weld: {value_added: 12, energy_kwh: 0.1}}\n")
    with pytest.raises(ConfigError, match="cannot exceed the end_of_line"):
        load_costs(path)
