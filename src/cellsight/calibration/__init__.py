"""Thresholds set for a target overkill or escape rate or the least expected cost, and the 0–1 score scale."""

from cellsight.calibration.cost import calibrate_for_cost, cost_optimal_threshold
from cellsight.calibration.thresholds import Calibration, calibrate_for_escape, calibrate_for_overkill

__all__ = [
    "Calibration", "calibrate_for_cost", "calibrate_for_escape", "calibrate_for_overkill", "cost_optimal_threshold",
]
