"""`train --costs` and `calibrate --costs` agree: the same held-out images give the same least-cost threshold."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellsight.calibration.cost_model import CostTerms
from cellsight.data.sources import load_dataset
from cellsight.detectors.classical import ClassicalSettings
from cellsight.errors import ConfigError, DataError
from cellsight.modelfile import load_model
from cellsight.workflows.calibrate import calibrate_costs, save_recalibrated
from cellsight.workflows.train import TrainRequest, train

TERMS = CostTerms(false_call=2.0, escape=50.0, defect_rate=0.05)


def test_train_with_costs_and_calibrate_find_the_same_threshold(tiny_labelled: Path, tmp_path: Path) -> None:
    dataset = load_dataset(str(tiny_labelled))
    request = TrainRequest("classical", ClassicalSettings(image_size=48), policy="cost", costs=TERMS, val_fraction=0.3)
    result = train(dataset, tmp_path / "cost.safetensors", request)
    assert result.calibration.policy == "cost" and result.calibration.n_defective > 0
    loaded = load_model(tmp_path / "cost.safetensors")
    assert loaded.metadata["training"]["cost_calibration"] == TERMS.to_dict()

    again = calibrate_costs(loaded, dataset, TERMS)
    assert again.calibration.threshold == result.calibration.threshold
    assert again.optimal.cost_per_1000 <= again.current.cost_per_1000 + 1e-9
    assert again.optimal.overkill.n == result.calibration.n_good

    # a model calibrated for overkill, moved to the least-cost threshold and written out
    overkill = train(dataset, tmp_path / "ok.safetensors", TrainRequest("classical", ClassicalSettings(image_size=48),
                                                                        target=0.1, val_fraction=0.3))
    moved = calibrate_costs(load_model(tmp_path / "ok.safetensors"), dataset, TERMS)
    assert moved.current.threshold == overkill.calibration.threshold
    assert moved.optimal.cost_per_1000 <= moved.current.cost_per_1000
    save_recalibrated(load_model(tmp_path / "ok.safetensors"), moved, tmp_path / "moved.safetensors")
    written = load_model(tmp_path / "moved.safetensors")
    assert written.detector.calibration == moved.calibration
    assert written.metadata["training"]["cost_calibration"]["previous"]["policy"] == "overkill"


def test_a_different_data_set_is_refused_for_the_held_out_part(tiny_labelled: Path, tiny_mvtec: Path,
                                                               tmp_path: Path) -> None:
    dataset = load_dataset(str(tiny_labelled))
    train(dataset, tmp_path / "m.safetensors", TrainRequest("classical", ClassicalSettings(image_size=48),
                                                            val_fraction=0.3))
    with pytest.raises(DataError, match="not the ones the model was calibrated on"):
        calibrate_costs(load_model(tmp_path / "m.safetensors"), load_dataset(str(tiny_mvtec)), TERMS)
    with pytest.raises(ConfigError, match="go together"):
        TrainRequest("classical", policy="cost")
