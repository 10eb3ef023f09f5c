"""Image and pixel metrics, the operating point at the calibrated threshold, and the evaluation report."""

from cellsight.metrics.image_metrics import average_precision, f1_max, image_auroc
from cellsight.metrics.intervals import wilson_interval
from cellsight.metrics.operating_point import OperatingPoint, RateWithInterval, operating_point
from cellsight.metrics.overlay import overlay_heatmap, png_data_uri
from cellsight.metrics.pixel_metrics import aupro, pixel_auroc, pro_curve
from cellsight.metrics.report import EvaluationReport, Example, build_report, pick_examples

__all__ = [
    "EvaluationReport",
    "Example",
    "OperatingPoint",
    "RateWithInterval",
    "aupro",
    "average_precision",
    "build_report",
    "f1_max",
    "image_auroc",
    "operating_point",
    "overlay_heatmap",
    "pick_examples",
    "pixel_auroc",
    "png_data_uri",
    "pro_curve",
    "wilson_interval",
]
