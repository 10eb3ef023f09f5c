"""The whole feature step as one graph: normalise, backbone, 3x3 pooling, levels joined, patches last.

Why one graph and not the backbone alone: with only the backbone in ONNX Runtime, every image also
paid for a normalisation pass, a channels-last copy, per-level pooling and upsampling and a final
transpose in eager torch, each a separate pass over memory with its own thread-pool wake-up. In one
graph ONNX Runtime fuses the normalisation into the first convolution and runs the rest without leaving
its thread pool. The arithmetic is the torch path's (`pool_levels` is shared), so both give the same
features up to float rounding; `tests/unit/features/test_features_graph.py` checks the verdicts agree.

Input: (N, S, S, C) float32 in [0, 1] (C = 1 gray or 3 RGB; the layout `PatchFeatureExtractor.prepare`
produces). Output: (N, h, w, D) float32 patch features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cellsight.features.backbones import BackboneSpec

GRAPH_INPUT = "pixels"
GRAPH_OUTPUT = "features"


def pool_levels(levels: Sequence[torch.Tensor]) -> torch.Tensor:
    """3x3 average per level, deeper levels bilinear to the first's size, joined: (N, D, h, w)."""
    target = levels[0].shape[-2:]
    pooled = []
    for level in levels:
        level = F.avg_pool2d(level, kernel_size=3, stride=1, padding=1)
        if level.shape[-2:] != target:
            level = F.interpolate(level, size=target, mode="bilinear", align_corners=False)
        pooled.append(level)
    return torch.cat(pooled, dim=1)


class FeatureGraph(nn.Module):
    """(N, S, S, C) pixels in [0, 1] -> (N, h, w, D) patch features, around a backbone's feature model."""

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(self, backbone: nn.Module, spec: BackboneSpec, channels: int) -> None:
        super().__init__()
        self.backbone = backbone.eval()
        self.channels = channels
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2)  # gray (C = 1) broadcasts to 3 channels in the subtraction
        x = (x - self.mean) * self.inv_std
        return pool_levels(list(self.backbone(x))).permute(0, 2, 3, 1)

    def example(self, image_size: int) -> torch.Tensor:
        return torch.zeros(1, image_size, image_size, self.channels)
