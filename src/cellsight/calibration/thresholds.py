"""Turn raw detector scores into a verdict threshold and a 0–1 score with the threshold at 0.5.

A line sets the threshold for a business rate, not for a metric: either the *overkill* (false-call) rate
it can afford on good parts, or the *escape* rate it can tolerate on defective parts. Both calibrations
count on the validation scores directly, with "NG when raw >= threshold".

Tie and small-sample rules (the line has to be able to predict them):

* `calibrate_for_overkill` allows ``k = floor(target * n_good)`` false calls on validation, never more.
  The threshold goes halfway between the highest good score that must pass (the (k+1)-th largest) and the
  next distinct score above it: validation alone cannot say where in that gap the true quantile lies, and
  the midpoint leaves equal margin both ways. Ties at the cut all pass, so ties can only lower the
  validation overkill below k. With ``k = 0`` (fewer than ``1/target`` good images) the threshold sits
  half a score gap above the highest good score.
* `calibrate_for_escape` allows ``j = floor(target * n_defective)`` escapes and returns the *highest*
  threshold that keeps them: exactly the (j+1)-th lowest defective score (which itself is NG).

`low` and `high` only shape the displayed 0–1 scale; the verdict depends on `threshold` alone:

* ``low`` = the lowest good score (goods spread over 0–0.5);
* ``high`` = the highest defective score when one is above the threshold, else
  ``threshold + 2 * (threshold - median good)`` (a part twice as far above the threshold as a typical good
  part is below it saturates at 1.0);
* when a rule gives no width (all scores equal, threshold below every good score...), a unit taken from the
  score spread, or ``1e-3 * max(|threshold|, 1)`` when everything is equal, keeps ``low < threshold < high``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from cellsight.errors import ConfigError, DataError

POLICIES = ("overkill", "escape", "cost")  # cost: target is the defect rate assumed (calibration/cost.py)
_HIGH_SPREAD = 2.0
_BELOW_HALF = float(np.nextafter(0.5, 0.0))
_BELOW_HALF_32 = np.nextafter(np.float32(0.5), np.float32(0.0))


@dataclass(frozen=True)
class Calibration:
    """A raw-score threshold and the piecewise-linear map that puts it at 0.5."""

    threshold: float
    low: float
    high: float
    policy: str
    target: float
    n_good: int
    n_defective: int

    def __post_init__(self) -> None:
        values = (self.low, self.threshold, self.high)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"calibration needs finite low/threshold/high, got {values}")
        if not self.low < self.threshold < self.high:
            raise ValueError(f"calibration needs low < threshold < high, got {values}")
        if self.policy not in POLICIES:
            raise ValueError(f"calibration policy must be one of {POLICIES}, got {self.policy!r}")
        _check_target(self.target, self.policy)
        if self.n_good < 0 or self.n_defective < 0:
            raise ValueError("calibration image counts must be >= 0")

    @overload
    def normalise(self, raw: float) -> float: ...
    @overload
    def normalise(self, raw: np.ndarray) -> np.ndarray: ...

    def normalise(self, raw: np.ndarray | float) -> np.ndarray | float:
        """Map raw scores to [0, 1]: low→0, threshold→0.5, high→1, clipped; NaN stays NaN.

        Guarantees ``normalise(raw) >= 0.5`` exactly when ``raw >= threshold``, also after the float32
        cast of arrays, so the normalised verdict never disagrees with the raw one.
        """
        is_array = isinstance(raw, np.ndarray)
        x = np.asarray(raw, dtype=np.float64)
        below = x < self.threshold
        lower = 0.5 * (x - self.low) / (self.threshold - self.low)
        upper = 0.5 + 0.5 * (x - self.threshold) / (self.high - self.threshold)
        out = np.clip(np.where(below, lower, upper), 0.0, 1.0)
        if is_array:
            out32 = out.astype(np.float32)
            return np.where(below, np.minimum(out32, _BELOW_HALF_32), np.maximum(out32, np.float32(0.5)))
        value = float(out)
        if below:
            return min(value, _BELOW_HALF)
        return value if math.isnan(value) else max(value, 0.5)

    def to_dict(self) -> dict[str, float | int | str]:
        return {
            "threshold": self.threshold,
            "low": self.low,
            "high": self.high,
            "policy": self.policy,
            "target": self.target,
            "n_good": self.n_good,
            "n_defective": self.n_defective,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Rebuild from `to_dict()`; a missing or mistyped field is a ValueError naming it."""
        try:
            return cls(
                threshold=float(data["threshold"]),
                low=float(data["low"]),
                high=float(data["high"]),
                policy=str(data["policy"]),
                target=float(data["target"]),
                n_good=int(data["n_good"]),
                n_defective=int(data["n_defective"]),
            )
        except KeyError as err:
            raise ValueError(f"calibration is missing field {err.args[0]!r}") from None
        except (TypeError, ValueError) as err:
            raise ValueError(f"invalid calibration: {err}") from None


def calibrate_for_overkill(good_scores: np.ndarray, target_overkill: float = 0.05) -> Calibration:
    """The lowest threshold (midpoint rule, see module doc) with at most ``floor(target*n)`` good NG."""
    _check_target(target_overkill, "overkill")
    good = _scores(good_scores, "good_scores")
    desc = np.sort(good)[::-1]
    allowed = math.floor(target_overkill * good.size + 1e-9)
    cut = float(desc[min(allowed, good.size - 1)])  # highest good score that must pass
    above = desc[desc > cut]
    if above.size:
        upper = float(above[-1])
    else:
        below = desc[desc < cut]
        gap = cut - float(below[0]) if below.size else _fallback_unit(cut, good)
        upper = cut + gap
    threshold = 0.5 * (cut + upper)
    if threshold <= cut:  # adjacent floats: the midpoint rounded onto the passing score
        threshold = float(np.nextafter(cut, math.inf))
    low, high = _span(threshold, good, None)
    return Calibration(threshold, low, high, "overkill", float(target_overkill), int(good.size), 0)


def calibrate_for_escape(
    good_scores: np.ndarray, defective_scores: np.ndarray, target_escape: float
) -> Calibration:
    """The highest threshold with at most ``floor(target*n_defective)`` defectives below it (OK)."""
    _check_target(target_escape, "escape")
    good = _scores(good_scores, "good_scores")
    defective = _scores(defective_scores, "defective_scores")
    allowed = math.floor(target_escape * defective.size + 1e-9)
    threshold = float(np.sort(defective)[min(allowed, defective.size - 1)])
    low, high = _span(threshold, good, defective)
    return Calibration(
        threshold, low, high, "escape", float(target_escape), int(good.size), int(defective.size)
    )


def _check_target(target: float, policy: str) -> None:
    try:
        value = float(target)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(target, bool) or not 0.0 < value < 1.0:
        raise ConfigError(f"target {policy} rate must be a fraction in (0, 1), got {target!r}")


def _scores(values: np.ndarray, name: str) -> np.ndarray:
    scores = np.asarray(values, dtype=np.float64).ravel()
    if scores.size == 0:
        raise DataError(f"{name} is empty: calibration needs validation scores")
    if not np.all(np.isfinite(scores)):
        bad = int(np.count_nonzero(~np.isfinite(scores)))
        raise DataError(f"{name} has {bad} NaN/infinite score(s): drop failed images before calibrating")
    return scores


def _fallback_unit(threshold: float, *groups: np.ndarray) -> float:
    """A positive width for degenerate cases: the score range, else a tiny relative step."""
    spread = max(float(np.ptp(g)) for g in groups)
    return spread if spread > 0 else 1e-3 * max(abs(threshold), 1.0)


def _span(threshold: float, good: np.ndarray, defective: np.ndarray | None) -> tuple[float, float]:
    groups = (good,) if defective is None else (good, defective)
    unit = threshold - float(np.median(good))
    if not unit > 0:
        unit = _fallback_unit(threshold, *groups)
    low = float(good.min())
    if not low < threshold:
        low = threshold - unit
    high = float(defective.max()) if defective is not None else -math.inf
    if not high > threshold:
        high = threshold + _HIGH_SPREAD * unit
    # Huge |threshold| with a tiny unit could round back onto the threshold.
    if not low < threshold:
        low = float(np.nextafter(threshold, -math.inf))
    if not high > threshold:
        high = float(np.nextafter(threshold, math.inf))
    return low, high
