"""The GPU runtime's half-precision backbone, exercised on the CPU (no GPU on CI)."""

from __future__ import annotations

import numpy as np
import torch

from cellsight.features.backbones import preprocess
from cellsight.features.extractor import FeatureConfig, PatchFeatureExtractor


def test_half_precision_features_match_float_and_leave_the_stored_weights_alone() -> None:
    extractor = PatchFeatureExtractor.pretrained(FeatureConfig("tf_efficientnet_lite0", (2, 3), 64, 3), runtime="torch")
    before = {k: v.clone() for k, v in extractor.state_dict().items()}
    rng = np.random.default_rng(0)
    batch = preprocess(rng.random((2, 64, 64, 3), dtype=np.float32), extractor.spec)
    with torch.inference_mode():
        full = extractor._forward_torch(batch)
        half = extractor._forward_half(batch, torch.device("cpu"))
    for a, b in zip(full, half, strict=True):
        assert b.dtype == torch.float32
        scale = float(a.abs().max())
        assert float((a - b).abs().max()) < 0.02 * scale
    for key, value in extractor.state_dict().items():
        assert value.dtype == before[key].dtype and torch.equal(value, before[key])
