"""The threshold that minimises expected cost, instead of one that meets a rate target.

Per cell, with a share `defect_rate` of defective cells, a threshold t costs

    C(t) = (1 - defect_rate) * false_call_cost * P(good score >= t) + defect_rate * escape_cost * P(defective score < t)

estimated on held-out scores ("NG when raw >= t", as everywhere). Only thresholds between two distinct
held-out scores change C, so the candidates are the midpoints between consecutive distinct scores plus
one below and one above them all. When several consecutive candidates tie at the minimum (a flat
stretch), the middle one is taken: the data cannot say where in the stretch the true optimum lies.
For two normal score distributions with equal spread the optimum is known in closed form (the
likelihood-ratio rule), which the tests check this against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cellsight.calibration.thresholds import Calibration, _check_target, _scores, _span
from cellsight.errors import ConfigError


@dataclass(frozen=True)
class CostOptimum:
    """The cost-optimal raw threshold, what it does on the held-out scores, and the curve it came from."""

    threshold: float
    expected_cost: float  # per cell, in the cost model's currency
    false_calls: int  # held-out good scores >= threshold
    escapes: int  # held-out defective scores < threshold
    n_good: int
    n_defective: int
    thresholds: np.ndarray  # every candidate, ascending
    costs: np.ndarray  # C at each candidate


def expected_costs(
    good: np.ndarray, defective: np.ndarray, thresholds: np.ndarray,
    false_call_cost: float, escape_cost: float, defect_rate: float,
) -> np.ndarray:
    """C(t) for each t in `thresholds` (see the module docstring)."""
    g, d = np.sort(good), np.sort(defective)
    false_call_share = 1.0 - np.searchsorted(g, thresholds, side="left") / g.size
    escape_share = np.searchsorted(d, thresholds, side="left") / d.size
    return (1.0 - defect_rate) * false_call_cost * false_call_share + defect_rate * escape_cost * escape_share


def cost_optimal_threshold(
    good_scores: np.ndarray, defective_scores: np.ndarray,
    false_call_cost: float, escape_cost: float, defect_rate: float,
) -> CostOptimum:
    """The raw threshold with the lowest expected cost per cell on these held-out scores."""
    _check_target(defect_rate, "defect")
    if not (false_call_cost >= 0 and escape_cost >= 0) or false_call_cost + escape_cost == 0:
        raise ConfigError(f"costs must be >= 0 and not both 0, got false call {false_call_cost}, escape {escape_cost}")
    good = _scores(good_scores, "good_scores")
    defective = _scores(defective_scores, "defective_scores")
    distinct = np.unique(np.concatenate([good, defective]))
    step = float(np.ptp(distinct)) or 1.0
    candidates = np.concatenate([
        [distinct[0] - step], 0.5 * (distinct[:-1] + distinct[1:]), [distinct[-1] + step]
    ])
    costs = expected_costs(good, defective, candidates, false_call_cost, escape_cost, defect_rate)
    best = float(costs.min())
    at_min = np.flatnonzero(np.isclose(costs, best, rtol=1e-12, atol=1e-15))
    # the middle of the first stretch of consecutive minimal candidates
    run_end = at_min[0]
    while run_end + 1 in at_min:
        run_end += 1
    choice = int((at_min[0] + run_end) // 2)
    t = float(candidates[choice])
    return CostOptimum(
        threshold=t, expected_cost=float(costs[choice]), false_calls=int(np.sum(good >= t)),
        escapes=int(np.sum(defective < t)), n_good=int(good.size), n_defective=int(defective.size),
        thresholds=candidates, costs=costs,
    )


def calibrate_for_cost(
    good_scores: np.ndarray, defective_scores: np.ndarray,
    false_call_cost: float, escape_cost: float, defect_rate: float,
) -> tuple[Calibration, CostOptimum]:
    """A calibration (policy "cost", target = the defect rate it assumed) at the cost-optimal threshold."""
    optimum = cost_optimal_threshold(good_scores, defective_scores, false_call_cost, escape_cost, defect_rate)
    good = np.asarray(good_scores, dtype=np.float64).ravel()
    defective = np.asarray(defective_scores, dtype=np.float64).ravel()
    low, high = _span(optimum.threshold, good, defective)
    calibration = Calibration(
        optimum.threshold, low, high, "cost", float(defect_rate), int(good.size), int(defective.size)
    )
    return calibration, optimum
