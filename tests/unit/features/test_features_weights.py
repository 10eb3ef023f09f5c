"""Offline weight files: safe loading, pinned hashes, and the key renaming onto timm's names."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import timm
import torch

from cellsight.features import weights
from cellsight.features.weights import (
    OFFLINE_WEIGHTS,
    WeightsError,
    load_weights_file,
    pretrained_state_dict,
    wheel_weights_path,
)


@pytest.mark.parametrize("name", OFFLINE_WEIGHTS)
def test_wheel_weights_rename_onto_timm_one_to_one(name: str) -> None:
    raw = load_weights_file(wheel_weights_path(name))
    renamed = pretrained_state_dict(name)
    target = timm.create_model(name, pretrained=False, device="meta").state_dict()
    assert len(renamed) == len(raw)  # nothing dropped, nothing merged
    assert set(renamed) == set(target)
    for key, tensor in renamed.items():
        assert tensor.shape == target[key].shape, key
    # Same tensors, only new names.
    assert sum(float(t.double().sum()) for t in raw.values() if t.is_floating_point()) == pytest.approx(
        sum(float(t.double().sum()) for t in renamed.values() if t.is_floating_point())
    )


def test_first_stage_blocks_use_depthwise_separable_names() -> None:
    lite = pretrained_state_dict("tf_efficientnet_lite0")
    assert "blocks.0.0.conv_pw.weight" in lite and "blocks.0.0.conv_pwl.weight" not in lite
    assert lite["blocks.0.0.conv_dw.weight"].shape == (32, 1, 3, 3)
    assert lite["blocks.1.0.conv_pwl.weight"].shape == (24, 96, 1, 1)
    mobilenet = pretrained_state_dict("mobilenetv2_100")
    assert mobilenet["blocks.0.0.conv_pw.weight"].shape == (16, 32, 1, 1)
    assert mobilenet["blocks.6.0.conv_pwl.weight"].shape == (320, 960, 1, 1)


def test_a_foreign_layout_file_is_renamed_too() -> None:
    """A user may point at a lukemelas or torchvision file directly; it is recognised and renamed."""
    path = wheel_weights_path("tf_efficientnet_lite0")
    from_file = pretrained_state_dict("tf_efficientnet_lite0", weights=path)
    assert from_file.keys() == pretrained_state_dict("tf_efficientnet_lite0").keys()


@dataclasses.dataclass
class Payload:
    """Any non-tensor class: unpickling it is where arbitrary code could run."""

    x: int


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "payload": Payload(1)}, path)
    with pytest.raises(WeightsError, match="cannot read"):
        load_weights_file(path)


def test_unsupported_or_missing_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        load_weights_file(tmp_path / "nope.safetensors")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\0")
    with pytest.raises(WeightsError, match="unsupported"):
        load_weights_file(onnx)


def test_a_swapped_wheel_file_fails_the_pinned_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = weights._WHEEL_WEIGHTS["tf_efficientnet_lite0"]
    monkeypatch.setitem(weights._WHEEL_WEIGHTS, "tf_efficientnet_lite0", dataclasses.replace(entry, sha256="0" * 64))
    with pytest.raises(WeightsError, match="sha256"):
        pretrained_state_dict("tf_efficientnet_lite0")


def test_no_offline_weights_for_other_models() -> None:
    with pytest.raises(WeightsError, match="tf_efficientnet_lite0"):
        wheel_weights_path("resnet18")
