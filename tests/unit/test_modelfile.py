"""The model file: exact round trip, and refusal of anything altered, truncated or foreign."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cellsight.calibration import calibrate_for_overkill
from cellsight.data import LazyImages, load_mvtec
from cellsight.detectors.base import NotCalibratedError, TrainingSet
from cellsight.detectors.classical import Classical
from cellsight.modelfile import ModelFileError, load_model, save_model


@pytest.fixture(scope="module")
def model_path(tiny_mvtec: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dataset = load_mvtec(tiny_mvtec)
    detector = Classical(image_size=64).fit(TrainingSet.good(LazyImages(dataset.select(split="train").paths)))
    detector.calibration = calibrate_for_overkill(np.linspace(0.1, 0.5, 20), 0.05)
    path = tmp_path_factory.mktemp("model") / "station.safetensors"
    save_model(path, detector, training={"dataset": "tiny", "fingerprint": dataset.fingerprint()}, model_version="v7")
    return path


def test_round_trip_keeps_detector_calibration_and_metadata(model_path: Path, tiny_mvtec: Path) -> None:
    loaded = load_model(model_path)
    assert loaded.version == "v7"
    assert loaded.metadata["detector"] == "classical"
    assert loaded.metadata["training"]["dataset"] == "tiny"
    assert {"torch", "timm", "numpy", "python"} <= set(loaded.metadata["versions"])
    assert loaded.detector.calibration is not None
    assert len(loaded.content_hash) == 64
    images = list(LazyImages(load_mvtec(tiny_mvtec).select(split="test").paths[:4]))
    again = load_model(model_path)
    np.testing.assert_array_equal(loaded.detector.score(images).scores, again.detector.score(images).scores)


def test_file_is_plain_safetensors_with_json_header(model_path: Path) -> None:
    data = model_path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    description = json.loads(header["__metadata__"]["cellsight"])
    assert description["format"] == "cellsight-model"
    assert b"\x80\x04" not in data[:16]  # no pickle protocol marker up front


def test_a_flipped_byte_in_the_tensors_is_refused(model_path: Path, tmp_path: Path) -> None:
    data = bytearray(model_path.read_bytes())
    data[-5] ^= 0xFF
    altered = tmp_path / "altered.safetensors"
    altered.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="hash mismatch"):
        load_model(altered)


def test_edited_metadata_is_refused(model_path: Path, tmp_path: Path) -> None:
    data = model_path.read_bytes()
    edited = data.replace(b'\\"model_version\\": \\"v7\\"', b'\\"model_version\\": \\"v8\\"')
    assert edited != data
    target = tmp_path / "edited.safetensors"
    target.write_bytes(edited)
    with pytest.raises(ModelFileError, match="hash mismatch"):
        load_model(target)


@pytest.mark.parametrize("keep", [0, 7, 100, -10])
def test_truncated_files_are_refused(model_path: Path, tmp_path: Path, keep: int) -> None:
    data = model_path.read_bytes()
    target = tmp_path / "cut.safetensors"
    target.write_bytes(data[:keep])
    with pytest.raises(ModelFileError, match=str(target.name)):
        load_model(target)


def test_foreign_safetensors_and_missing_files_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(ModelFileError, match="not a cellsight model"):
        load_model(foreign)
    with pytest.raises(ModelFileError, match="cannot read"):
        load_model(tmp_path / "missing.safetensors")


def test_uncalibrated_detector_cannot_be_saved(tiny_mvtec: Path, tmp_path: Path) -> None:
    goods = TrainingSet.good(LazyImages(load_mvtec(tiny_mvtec).select(split="train").paths[:8]))
    detector = Classical(image_size=32).fit(goods)
    with pytest.raises(NotCalibratedError, match="calibrated"):
        save_model(tmp_path / "m.safetensors", detector, training={})
