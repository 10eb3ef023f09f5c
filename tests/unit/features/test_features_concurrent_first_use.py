"""Issue 13 #3: the stations' first requests at the same time failed in the lazy ONNX export
(`GLOBALS.in_onnx_export` assertions). Several models' first inspections at once must all succeed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cellsight.modelfile import load_model

PATCHCORE = Path(__file__).parents[2] / "fixtures" / "legacy_models" / "patchcore.safetensors"


def test_first_inspections_of_several_models_at_once() -> None:
    detectors = [load_model(PATCHCORE).detector for _ in range(4)]  # four stations, each exports its backbone
    image = np.full((48, 48), 128, np.uint8)
    alone = detectors[0].predict([image])[0].score
    detectors[0] = load_model(PATCHCORE).detector  # fresh again: nothing built yet
    with ThreadPoolExecutor(8) as pool:  # two threads per model: also the same model's lazy build at once
        scores = list(pool.map(lambda d: d.predict([image])[0].score, detectors + detectors))
    assert scores == [alone] * 8
