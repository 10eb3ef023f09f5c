"""The exported deployment scores exactly like the torch model it came from, and refuses altered files.

Tolerance: max |raw score (torch) - raw score (ONNX)| / threshold <= 1e-4 (`deploy.TOLERANCE`) with identical
verdicts. Measured on the tiny generated station's 20 test images (96x96, EfficientNet-Lite0 levels 2+3):
max |raw diff| 1.9e-5 on a threshold of ~12, i.e. 1.6e-6 of the threshold (float32 rounding of different
kernels), some 60 times inside the tolerance; the export records its own measurement in deploy.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cellsight.calibration import calibrate_for_overkill
from cellsight.data import LazyImages, load_mvtec
from cellsight.deploy import TOLERANCE, DeploymentError, export_deployment, load_deployment
from cellsight.detectors.base import TrainingSet
from cellsight.detectors.patchcore import PatchCore
from cellsight.features.onnx_backbone import export_onnx, sha256
from cellsight.modelfile import load_model, save_model


@pytest.fixture(scope="module")
def station(tiny_mvtec: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[np.ndarray]]:
    dataset = load_mvtec(tiny_mvtec)
    train = dataset.select(split="train").paths
    detector = PatchCore(image_size=96, bank_size=512, batch_size=8, runtime="torch")
    detector.fit(TrainingSet.good(LazyImages(train[:30])))
    good_scores = detector.score(list(LazyImages(train[30:]))).scores
    detector.calibration = calibrate_for_overkill(good_scores, 0.1)
    root = tmp_path_factory.mktemp("deploy")
    model = root / "station.safetensors"
    save_model(model, detector, training={"dataset": "tiny"})
    test_images = list(LazyImages(dataset.select(split="test").paths))
    out = root / "deployment"
    export_deployment(model, out, test_images)
    return model, out, test_images


def test_exported_path_gives_the_same_scores_and_verdicts_as_torch(
    station: tuple[Path, Path, list[np.ndarray]],
) -> None:
    model, out, images = station
    reference = load_model(model).detector
    assert isinstance(reference, PatchCore)
    reference.use_runtime("torch")
    deployed = load_deployment(out)
    assert deployed.model.detector.extractor.runtime == "onnx"
    torch_predictions = reference.predict(images)
    onnx_predictions = deployed.model.detector.predict(images)
    threshold = deployed.model.detector.calibration.threshold  # type: ignore[union-attr]
    diff = max(abs(a.raw_score - b.raw_score) for a, b in zip(torch_predictions, onnx_predictions, strict=True))
    assert diff / threshold <= TOLERANCE
    assert [p.verdict for p in torch_predictions] == [p.verdict for p in onnx_predictions]
    assert {p.verdict.value for p in torch_predictions} == {"OK", "NG"}  # both verdicts are exercised
    recorded = deployed.manifest["verification"]
    assert recorded["images"] == len(images) and recorded["verdicts_identical"]
    assert recorded["max_diff_over_threshold"] <= TOLERANCE


def test_manifest_describes_the_model_and_its_graph(station: tuple[Path, Path, list[np.ndarray]]) -> None:
    model, out, _ = station
    manifest = json.loads((out / "deploy.json").read_text())
    loaded = load_model(model)
    assert manifest["content_sha256"] == loaded.content_hash
    assert (out / "model.safetensors").read_bytes() == model.read_bytes()
    assert manifest["input"]["height"] == manifest["input"]["width"] == 96
    assert manifest["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert manifest["layers"] == [2, 3]
    assert manifest["calibration"]["threshold"] == loaded.detector.calibration.threshold  # type: ignore[union-attr]
    assert manifest["onnx"]["opset"] == 17 and manifest["onnx"]["verified_with_onnxruntime"]
    assert manifest["format_version"] == 2
    assert manifest["runtime"] | {"version": None} == {
        "name": "onnxruntime", "version": None, "precision": "float32", "graph": "features"
    }


def test_a_format_1_folder_with_the_backbone_alone_still_loads_and_agrees(
    station: tuple[Path, Path, list[np.ndarray]], tmp_path: Path
) -> None:
    """Folders written before the feature graph hold the bare backbone; pooling then runs in torch."""
    model, out, images = station
    old = tmp_path / "old"
    shutil.copytree(out, old)
    detector = load_model(model).detector
    assert isinstance(detector, PatchCore)
    backbone = export_onnx(detector.extractor.model, 96)
    (old / "backbone.onnx").write_bytes(backbone)
    manifest = json.loads((old / "deploy.json").read_text())
    manifest["format_version"] = 1
    del manifest["runtime"]
    manifest["onnx"]["sha256"] = sha256(backbone)
    (old / "deploy.json").write_text(json.dumps(manifest))
    loaded = load_deployment(old).model.detector
    assert isinstance(loaded, PatchCore)
    assert not loaded.extractor.runs_whole_graph
    new = load_deployment(out).model.detector
    assert isinstance(new, PatchCore) and new.extractor.runs_whole_graph
    threshold = new.calibration.threshold  # type: ignore[union-attr]
    old_scores, new_scores = loaded.score(images).scores, new.score(images).scores
    assert np.abs(old_scores - new_scores).max() / threshold <= TOLERANCE
    assert np.array_equal(old_scores >= threshold, new_scores >= threshold)


@pytest.mark.parametrize("name", ["backbone.onnx", "model.safetensors"])
def test_an_altered_file_in_the_deployment_is_refused(
    station: tuple[Path, Path, list[np.ndarray]], tmp_path: Path, name: str
) -> None:
    _, out, _ = station
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(DeploymentError, match="sha256 differs"):
        load_deployment(copy)


def test_onnx_export_is_deterministic(station: tuple[Path, Path, list[np.ndarray]]) -> None:
    """Re-exporting the stored weights gives the deployed bytes: deriving the graph at load time is safe."""
    model, out, _ = station
    detector = load_model(model).detector
    assert isinstance(detector, PatchCore)
    assert export_onnx(detector.extractor.graph(), 96) == (out / "backbone.onnx").read_bytes()


def test_classical_models_have_nothing_to_export(tiny_mvtec: Path, tmp_path: Path) -> None:
    from cellsight.detectors.registry import detector_class

    dataset = load_mvtec(tiny_mvtec)
    detector = detector_class("classical")(image_size=96)
    detector.fit(TrainingSet.good(LazyImages(dataset.select(split="train").paths[:10])))
    detector.calibration = calibrate_for_overkill(np.linspace(0.1, 0.2, 10), 0.1)
    save_model(tmp_path / "c.safetensors", detector, training={})
    with pytest.raises(DeploymentError, match="classical has no backbone export"):
        export_deployment(tmp_path / "c.safetensors", tmp_path / "out")



def test_an_int8_export_needs_station_images_and_is_refused_when_it_changes_verdicts(
    station: tuple[Path, Path, list[np.ndarray]], tmp_path: Path
) -> None:
    """On this tiny station the int8 graph (features ~30% off float32) flips verdicts: no folder is written."""
    model, _, images = station
    with pytest.raises(DeploymentError, match="needs the station's good images"):
        export_deployment(model, tmp_path / "no-images", None, int8=True)
    with pytest.raises(DeploymentError, match="int8 backbone changes verdicts"):
        export_deployment(model, tmp_path / "int8", images, int8=True)
    assert not (tmp_path / "int8").exists()


def test_an_int8_export_records_its_precision_and_quantisation(
    station: tuple[Path, Path, list[np.ndarray]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What deploy.json says of an accepted int8 graph, and that the graph is calibrated on the given images."""
    from cellsight.features import quantize

    calibrated: list[int] = []

    def accept(onnx_bytes: bytes, pixels: np.ndarray) -> bytes:  # stands in for a graph that keeps verdicts
        calibrated.append(len(pixels))
        return onnx_bytes

    monkeypatch.setattr(quantize, "quantize_features", accept)
    model, _, images = station
    manifest = export_deployment(model, tmp_path / "int8", images, int8=True)
    assert calibrated == [len(images)] and pixels_side(tmp_path / "int8") == 96
    assert manifest["runtime"]["precision"] == "int8"
    assert manifest["runtime"]["quantization"]["weights"] == "int8, per output channel"
    assert manifest["runtime"]["quantization"]["calibration_images"] == len(images)
    assert manifest["verification"]["tolerance_diff_over_threshold"] is None
    assert manifest["verification"]["required"] == "identical verdicts"
    assert load_deployment(tmp_path / "int8").manifest["runtime"]["precision"] == "int8"


def pixels_side(folder: Path) -> int:
    return int(json.loads((folder / "deploy.json").read_text())["input"]["height"])


def test_the_int8_graph_is_quantised_convolutions(station: tuple[Path, Path, list[np.ndarray]]) -> None:
    import onnx

    from cellsight.features.quantize import quantize_features

    model, _, images = station
    detector = load_model(model).detector
    assert isinstance(detector, PatchCore)
    export = detector.backbone_export()
    graph = export_onnx(export.module, export.image_size)
    assert export.pixels is not None
    int8 = onnx.load_from_string(quantize_features(graph, export.pixels(images[:4])))
    convolutions = sum(node.op_type == "Conv" for node in int8.graph.node)
    weights = [node for node in int8.graph.node if node.op_type == "DequantizeLinear"]
    assert convolutions > 10 and len(weights) >= 2 * convolutions  # every convolution's input and weights
