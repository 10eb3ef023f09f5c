"""The feature graph on ONNX Runtime and OpenVINO, and the thread settings: the TorchScript reference's
verdicts, no spinning.

Tolerance: |raw score (graph) - raw score (torch)| / threshold <= 1e-4 with identical verdicts, the bar a
deployment must pass (`deploy.TOLERANCE`). Measured here: about 1e-6 of the threshold (float32 rounding
of fused kernels) on both runtimes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Literal

import numpy as np
import pytest

from cellsight.calibration import calibrate_for_overkill
from cellsight.deploy import TOLERANCE
from cellsight.detectors.base import TrainingSet
from cellsight.detectors.patchcore import PatchCore
from cellsight.errors import ConfigError
from cellsight.features.onnx_backbone import OnnxBackbone, session_options
from cellsight.features.threads import THREADS_VARIABLE, cpu_threads


def _cells(rng: np.random.Generator, n: int, defect: bool = False) -> list[np.ndarray]:
    images = []
    for _ in range(n):
        image = (rng.normal(0, 1, (80, 72)) * 8 + np.linspace(90, 150, 72)[None, :]).clip(0, 255)
        if defect:
            y, x = rng.integers(10, 60, 2)
            image[y : y + 10, x : x + 8] = rng.uniform(0, 40)
        images.append(image.astype(np.uint8))
    return images


@pytest.mark.parametrize(("channels", "runtime"), [(1, "onnx"), (3, "onnx"), (1, "openvino"), (3, "openvino")])
def test_feature_graph_gives_the_torch_verdicts(channels: int, runtime: Literal["onnx", "openvino"]) -> None:
    rng = np.random.default_rng(channels)
    goods, held_out = _cells(rng, 8), _cells(rng, 6)
    tests = _cells(rng, 6) + _cells(rng, 6, defect=True)
    detector = PatchCore(image_size=64, bank_size=128, channels=channels, runtime="torch")
    detector.fit(TrainingSet.good(goods))
    threshold = calibrate_for_overkill(detector.score(held_out).scores, 0.1).threshold
    reference = detector.score(tests).scores
    detector.use_runtime(runtime)
    graph = detector.score(tests).scores
    assert detector.extractor.runtime == runtime
    assert np.abs(graph - reference).max() / threshold <= TOLERANCE
    assert np.array_equal(graph >= threshold, reference >= threshold)
    assert (reference >= threshold).any() and (reference < threshold).any()  # both verdicts exercised


def test_spinning_does_not_change_the_features() -> None:
    detector = PatchCore(image_size=64, bank_size=32, runtime="onnx")
    detector.fit(TrainingSet.good(_cells(np.random.default_rng(0), 3)))
    graph = detector.extractor.onnx_bytes()
    pixels = detector.extractor.prepare(_cells(np.random.default_rng(1), 2))  # RGB: (2, 64, 64, 3)
    quiet, spinning = OnnxBackbone(graph, threads=2), OnnxBackbone(graph, threads=2, spinning=True)
    assert quiet.whole_graph
    np.testing.assert_array_equal(quiet.features(pixels).numpy(), spinning.features(pixels).numpy())
    assert session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_threads_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THREADS_VARIABLE, "1")
    assert cpu_threads() == 1 and session_options().intra_op_num_threads == 1
    monkeypatch.setenv(THREADS_VARIABLE, "two")
    with pytest.raises(ConfigError, match="CELLSIGHT_THREADS must be a whole number"):
        cpu_threads()
    monkeypatch.delenv(THREADS_VARIABLE)
    assert cpu_threads() >= 1


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_sleep_unless_told_otherwise(given: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    code = "import os, cellsight; print(os.environ['OMP_WAIT_POLICY'])"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == expected


def test_openvino_runtime_without_the_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from cellsight.features import extractor

    monkeypatch.setattr(extractor, "openvino_version", lambda: None)
    with pytest.raises(ConfigError, match=r"pip install 'cellsight\[openvino\]'"):
        extractor.resolve_runtime("openvino")


def test_gray_images_for_an_rgb_model_are_resized_once_with_the_same_bits() -> None:
    import cv2

    from cellsight.data.images import to_float01, to_rgb
    from cellsight.features.extractor import FeatureConfig, PatchFeatureExtractor

    extractor = PatchFeatureExtractor.pretrained(FeatureConfig("tf_efficientnet_lite0", (2, 3), 64, 3), runtime="torch")
    rng = np.random.default_rng(0)
    images = [(rng.random((90, 70)) * 255).astype(np.uint8), (rng.random((77, 65, 1)) * 65535).astype(np.uint16),
              (rng.random((64, 64)) * 255).astype(np.uint8), (rng.random((30, 40)) * 255).astype(np.uint8)]
    for image, got in zip(images, extractor.prepare(images), strict=True):
        expected = cv2.resize(to_float01(to_rgb(image)), (64, 64), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(got, expected)
