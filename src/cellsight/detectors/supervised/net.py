"""The supervised network: a timm EfficientNet/MobileNet split into a frozen trunk and a trained top.

Heads on the top: a defect-vs-good logit (the raw score), an optional defect-class head, and an
optional light segmentation head on the frozen mid-level features (where masks exist). Without a
segmentation head the anomaly map is the class activation map of the defect logit, whose spatial mean
is exactly that logit, so map and score share one scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from cellsight.errors import ConfigError


@dataclass(frozen=True)
class NetOutput:
    logit: torch.Tensor  # (N,) defect-vs-good
    class_logits: torch.Tensor | None  # (N, K) over defect classes
    map: torch.Tensor  # (N, h, w) in logit units: segmentation logits or class activation map
    seg_logits: torch.Tensor | None  # (N, h', w') at the frozen features' resolution


class SupervisedNet(nn.Module):
    """timm classifier with `frozen_blocks` leading blocks frozen (stem included) and new heads."""

    def __init__(self, backbone: nn.Module, frozen_blocks: int, n_classes: int, segmentation: bool) -> None:
        super().__init__()
        timm_model: Any = backbone  # timm's EfficientNet: attributes mypy cannot see through nn.Module
        blocks = timm_model.blocks
        if not 1 <= frozen_blocks < len(blocks):
            raise ConfigError(f"frozen_blocks must be in [1, {len(blocks) - 1}], got {frozen_blocks}")
        self.backbone = backbone
        self.frozen_blocks = frozen_blocks
        mid_channels = _out_channels(blocks[frozen_blocks - 1])
        features = int(timm_model.num_features)
        self.defect_head = nn.Linear(features, 1)
        self.class_head = nn.Linear(features, n_classes) if n_classes >= 2 else None
        self.seg_head = (
            nn.Sequential(nn.Conv2d(mid_channels, 32, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(32, 1, 1))
            if segmentation
            else None
        )
        for module in self.frozen_modules():
            for parameter in module.parameters():
                parameter.requires_grad_(False)

    def frozen_modules(self) -> list[nn.Module]:
        b: Any = self.backbone
        return [b.conv_stem, b.bn1, *list(b.blocks)[: self.frozen_blocks]]

    def train(self, mode: bool = True) -> SupervisedNet:
        """The frozen part always stays in eval mode: its BatchNorm statistics are ImageNet's."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen part: preprocessed images -> mid-level features (what the cache stores)."""
        b: Any = self.backbone
        x = b.bn1(b.conv_stem(x))
        for block in list(b.blocks)[: self.frozen_blocks]:
            x = block(x)
        return x

    def top(self, mid: torch.Tensor, dropout: float = 0.0) -> NetOutput:
        """The trained part, from mid-level features to logits and maps."""
        b: Any = self.backbone
        x = mid
        for block in list(b.blocks)[self.frozen_blocks :]:
            x = block(x)
        fmap = b.bn2(b.conv_head(x))
        pooled = F.dropout(fmap.mean(dim=(2, 3)), dropout, self.training)
        logit = self.defect_head(pooled)[:, 0]
        class_logits = self.class_head(pooled) if self.class_head is not None else None
        seg = self.seg_head(mid)[:, 0] if self.seg_head is not None else None
        if seg is not None:
            anomaly_map = seg
        else:
            weight = self.defect_head.weight[0]
            anomaly_map = torch.einsum("nchw,c->nhw", fmap, weight) + self.defect_head.bias[0]
        return NetOutput(logit, class_logits, anomaly_map, seg)


def build_backbone(name: str, state: dict[str, torch.Tensor] | None) -> nn.Module:
    """A timm classifier without its ImageNet head; `state` (timm names) fills its weights if given."""
    model = timm.create_model(name, pretrained=False, num_classes=0)
    if state is not None:
        wanted = model.state_dict().keys()
        model.load_state_dict({k: v for k, v in state.items() if k in wanted}, strict=True)
    if not hasattr(model, "blocks") or not hasattr(model, "conv_head"):
        raise ConfigError(f"supervised needs an EfficientNet/MobileNet-style timm model, {name!r} is not one")
    return model


def _out_channels(block: nn.Module) -> int:
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return int(convs[-1].out_channels)
