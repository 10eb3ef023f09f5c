"""Set a trained model's threshold for the least expected cost on held-out scores (`cellsight calibrate`).

By default the held-out part is the one the model was calibrated on at training time, rebuilt from the
seed and sizes in the model file and checked against its fingerprint (so the cost threshold is never
chosen on images the detector was fitted on); `split` picks a split of the data set instead. A model
calibrated on cross-fitted scores was fitted on every good: its goods' scores are the cross-fitted ones
stored in the model file (defects were never fitted on, so the model scores them itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellsight.calibration import Calibration, calibrate_for_cost
from cellsight.calibration.cost import CostOptimum, expected_costs
from cellsight.calibration.cost_model import CostTerms
from cellsight.data.dataset import GOOD, Dataset
from cellsight.detectors.base import LearnsFrom, ProgressFactory
from cellsight.errors import DataError
from cellsight.metrics.operating_point import RateWithInterval
from cellsight.modelfile import LoadedModel, save_model
from cellsight.workflows.train import CalibrationSplit, calibration_split, heldout_scores, labelled_split


@dataclass(frozen=True)
class ThresholdOutcome:
    """What one threshold does on the held-out scores."""

    name: str
    threshold: float
    overkill: RateWithInterval
    escape: RateWithInterval
    cost_per_1000: float  # expected, in the cost model's currency, per 1,000 cells


@dataclass(frozen=True)
class CostCalibration:
    terms: CostTerms
    split: str
    current: ThresholdOutcome  # the model's own threshold (its overkill or escape target)
    optimal: ThresholdOutcome
    calibration: Calibration
    optimum: CostOptimum


def heldout_split(loaded: LoadedModel, dataset: Dataset, split: str = "heldout") -> CalibrationSplit:
    """The images to choose the threshold on: the training-time held-out part (checked), or a named split."""
    if split != "heldout":
        part = dataset.select(split=split)
        return CalibrationSplit(Dataset(dataset.name, ()), part.select(label=0), part.select(label=1))
    training = loaded.metadata.get("training", {})
    labelled = loaded.detector.learns_from is LearnsFrom.LABELLED
    n_good, seed = training.get("n_calibration_good"), training.get("seed", 0)
    fraction = training.get("val_fraction")
    if fraction is None and n_good and not labelled:  # older files: the fraction that held out n_good
        fraction = n_good / max(1, len(dataset.select(split="train", defect_class=GOOD)))
    if fraction is None:
        raise DataError("the model file does not say how its held-out part was drawn: pass --split val or test")
    if labelled:
        chosen = labelled_split(dataset, float(fraction), int(seed))
    else:
        chosen = calibration_split(dataset, float(fraction), int(seed), int(training.get("folds", 0)))
    expected = training.get("calibration_fingerprint")
    if expected is not None and chosen.good.fingerprint() != expected:
        raise DataError(
            f"data set {dataset.name!r}: its held-out good images are not the ones the model was calibrated on "
            "(fingerprint differs): pass the training data, or --split val or test"
        )
    return chosen


def _outcome(
    name: str, threshold: float, good: np.ndarray, defective: np.ndarray, terms: CostTerms
) -> ThresholdOutcome:
    cost = expected_costs(good, defective, np.asarray([threshold]), terms.false_call, terms.escape, terms.defect_rate)
    return ThresholdOutcome(
        name, threshold, RateWithInterval.of(int(np.sum(good >= threshold)), good.size),
        RateWithInterval.of(int(np.sum(defective < threshold)), defective.size), float(cost[0]) * 1000.0,
    )


def calibrate_costs(
    loaded: LoadedModel, dataset: Dataset, terms: CostTerms, split: str = "heldout",
    progress: ProgressFactory | None = None,
) -> CostCalibration:
    """The cost-optimal threshold for this model on the held-out images, beside its current threshold."""
    chosen = heldout_split(loaded, dataset, split)
    if len(chosen.good) == 0 or len(chosen.defective) == 0:
        raise DataError(
            f"data set {dataset.name!r} ({split}): a cost threshold needs held-out good and defective images, "
            f"found {len(chosen.good)} good and {len(chosen.defective)} defective"
        )
    if chosen.folds is not None:
        good = np.asarray(loaded.metadata["training"]["cross_fit_good_scores"], dtype=np.float64)
    else:
        good = heldout_scores(loaded.detector, chosen.good, progress, "score good").astype(np.float64)
    defective = heldout_scores(loaded.detector, chosen.defective, progress, "score defective").astype(np.float64)
    calibration, optimum = calibrate_for_cost(good, defective, terms.false_call, terms.escape, terms.defect_rate)
    current = loaded.detector.calibration
    assert current is not None  # a loaded model is always calibrated
    return CostCalibration(
        terms=terms, split=split,
        current=_outcome(f"{current.policy} {current.target:.1%}", current.threshold, good, defective, terms),
        optimal=_outcome("least expected cost", optimum.threshold, good, defective, terms),
        calibration=calibration, optimum=optimum,
    )


def save_recalibrated(loaded: LoadedModel, result: CostCalibration, out: Path) -> str:
    """The same detector with the cost-optimal calibration, its terms recorded in the model file."""
    loaded.detector.calibration = result.calibration
    training = dict(loaded.metadata.get("training", {}))
    training["cost_calibration"] = {"split": result.split, **result.terms.to_dict(),
                                    "previous": loaded.metadata.get("calibration")}
    return save_model(out, loaded.detector, training=training, model_version=loaded.version or None)
