"""Thresholds set for a target overkill or escape rate, and the 0–1 score scale around them."""

from cellsight.calibration.thresholds import Calibration, calibrate_for_escape, calibrate_for_overkill

__all__ = ["Calibration", "calibrate_for_escape", "calibrate_for_overkill"]
