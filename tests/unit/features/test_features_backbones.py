"""Feature extractors: shapes promised by feature_info, the classifier's exact weights, local files."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from cellsight.features import (
    DEFAULT_BACKBONE,
    KNOWN_BACKBONES,
    WeightsError,
    backbone_spec,
    build_feature_extractor,
    create_classifier,
    create_feature_extractor,
    feature_info,
)


def test_default_backbone_has_offline_weights() -> None:
    assert DEFAULT_BACKBONE == "tf_efficientnet_lite0"
    assert DEFAULT_BACKBONE in KNOWN_BACKBONES
    assert backbone_spec(DEFAULT_BACKBONE) is KNOWN_BACKBONES[DEFAULT_BACKBONE]


def test_feature_info_lite0() -> None:
    assert feature_info("tf_efficientnet_lite0", range(5)) == [
        (16, 2),
        (24, 4),
        (40, 8),
        (112, 16),
        (320, 32),
    ]
    assert feature_info("tf_efficientnet_lite0", (2, 3)) == [(40, 8), (112, 16)]


@pytest.mark.parametrize("name", list(KNOWN_BACKBONES))
@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3, 4), (2, 3)])
def test_feature_maps_match_feature_info(name: str, out_indices: tuple[int, ...]) -> None:
    model = create_feature_extractor(name, out_indices)
    with torch.inference_mode():
        maps = model(torch.rand(2, 3, 64, 96))
    got = [(m.shape[1], 64 // m.shape[2]) for m in maps]
    assert got == feature_info(name, out_indices)
    assert all(m.shape[0] == 2 and 96 // m.shape[3] == 64 // m.shape[2] for m in maps)
    assert not model.training


@pytest.mark.parametrize("name", list(KNOWN_BACKBONES))
def test_feature_weights_equal_the_classifier_weights(name: str) -> None:
    classifier = create_classifier(name).state_dict()
    features = create_feature_extractor(name, (1, 2, 3)).state_dict()
    assert features, "feature model has no weights"
    assert set(features) <= set(classifier)
    for key, tensor in features.items():
        assert torch.equal(tensor, classifier[key]), key


def test_truncated_channels_last_extractor_computes_timm_features() -> None:
    """Dropping the unused deep blocks and going channels-last must not change the feature maps."""
    name, out_indices = DEFAULT_BACKBONE, (2, 3)
    reference = timm.create_model(name, pretrained=False, features_only=True, out_indices=out_indices)
    classifier = create_classifier(name).state_dict()
    reference.load_state_dict({k: classifier[k] for k in reference.state_dict()}, strict=True)
    reference.eval()
    fast = create_feature_extractor(name, out_indices)
    plain = create_feature_extractor(name, out_indices, channels_last=False)
    assert len(fast.get_submodule("blocks")._modules) < len(reference.get_submodule("blocks")._modules)
    x = torch.rand(2, 3, 96, 96)
    with torch.inference_mode():
        expected, got_plain = reference(x), plain(x)
        got_fast = fast(x.contiguous(memory_format=torch.channels_last))
    for e, p, f in zip(expected, got_plain, got_fast, strict=True):
        assert torch.equal(e, p)
        torch.testing.assert_close(f, e, rtol=1e-4, atol=1e-4)


def test_build_feature_extractor_from_a_stored_state() -> None:
    """A model file stores the feature model's own state dict; it rebuilds the same extractor."""
    original = create_feature_extractor(DEFAULT_BACKBONE, (2, 3))
    stored = {k: v.contiguous() for k, v in original.state_dict().items()}
    rebuilt = build_feature_extractor(DEFAULT_BACKBONE, (2, 3), stored)
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        for a, b in zip(original(x), rebuilt(x), strict=True):
            assert torch.equal(a, b)
    with pytest.raises(WeightsError, match="no pretrained value"):
        build_feature_extractor(DEFAULT_BACKBONE, (2, 3, 4), stored)  # deeper level not in the file


def test_local_safetensors_round_trip_for_another_timm_model(tmp_path: Path) -> None:
    """Any timm model works from a local file; convnext's features model renames stem.0 -> stem_0."""
    name = "convnext_atto"
    source = timm.create_model(name, pretrained=False)
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))

    classifier = create_classifier(name, weights=path)
    for key, tensor in source.state_dict().items():
        assert torch.equal(classifier.state_dict()[key], tensor), key

    extractor = create_feature_extractor(name, (1, 2), weights=path)
    feature_state = extractor.state_dict()
    assert torch.equal(feature_state["stem_0.weight"], source.state_dict()["stem.0.weight"])
    with torch.inference_mode():
        maps = extractor(torch.rand(1, 3, 64, 64))
    assert [(m.shape[1], 64 // m.shape[2]) for m in maps] == feature_info(name, (1, 2))
    assert backbone_spec(name).mean == (0.485, 0.456, 0.406)  # timm's default config for other models


def test_local_pth_overrides_the_wheel_for_a_known_backbone(tmp_path: Path) -> None:
    name = "mobilenetv2_100"
    source = timm.create_model(name, pretrained=False)
    path = tmp_path / "custom.pth"
    torch.save({"state_dict": source.state_dict()}, path)  # a training checkpoint wrapper
    loaded = create_classifier(name, weights=path).state_dict()
    assert torch.equal(loaded["conv_stem.weight"], source.state_dict()["conv_stem.weight"])


def test_unknown_backbone_without_weights_says_what_to_do() -> None:
    with pytest.raises(WeightsError) as excinfo:
        create_feature_extractor("resnet18", (1, 2))
    message = str(excinfo.value)
    for name in KNOWN_BACKBONES:
        assert name in message
    assert "weights=" in message and ".safetensors" in message
    with pytest.raises(ValueError, match="unknown timm model"):
        create_classifier("not_a_model")


def test_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "lite0.safetensors"
    save_file(create_classifier("tf_efficientnet_lite0").state_dict(), str(path))
    with pytest.raises(WeightsError, match="do not fit"):
        create_classifier("tf_efficientnet_lite2", weights=path)
