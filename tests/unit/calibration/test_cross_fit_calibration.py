"""Cross-fitted calibration meets its target overkill on new good parts.

A memory bank scores the goods it was fitted on near zero, so a threshold set on them would flag far too
many new good parts; cross-fitted scores come from models that never saw the image. Trained on every
good of a synthetic station (no val split) for 10% overkill, the model must flag new goods at a rate
whose 95% Wilson interval holds 10%.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tests.conftest import make_mvtec

from cellsight.data import LazyImages, load_mvtec
from cellsight.detectors.base import MapSize
from cellsight.metrics import wilson_interval
from cellsight.modelfile import load_model
from cellsight.workflows.train import TrainRequest, train

TARGET = 0.1
N_GOOD = 400  # calibration goods: enough that the threshold's own sampling error stays inside the interval
TINY = {"image_size": 32, "layers": [1, 2], "bank_size": 256, "batch_size": 16, "projection_dim": 16}


def test_cross_fitted_threshold_meets_its_overkill_on_new_goods(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path / "station", n_train=N_GOOD, n_test_good=400, n_test_defect=1, size=40)
    dataset = load_mvtec(root)
    request = TrainRequest.with_options("patchcore", TINY, target=TARGET)
    result = train(dataset, tmp_path / "m.safetensors", request)
    assert len(result.split.fit) == N_GOOD and result.split.folds is not None  # every good fitted, 5 folds
    assert result.calibration.n_good == N_GOOD

    new_goods = dataset.select(split="test", label=0)
    scores = result.detector.score(list(LazyImages(new_goods.paths)), MapSize.NONE).scores
    flagged = int(np.sum(scores >= result.calibration.threshold))
    low, high = wilson_interval(flagged, len(scores))
    assert low <= TARGET <= high, f"{flagged}/{len(scores)} new goods flagged for a {TARGET:.0%} target"

    training = load_model(tmp_path / "m.safetensors").metadata["training"]
    assert training["folds"] == 5 and len(training["cross_fit_good_scores"]) == N_GOOD
    assert training["cross_fit"] == "leave-one-image-out"  # PatchCore used no folds: each good left out of the bank
