"""Patch features for anomaly detection: resize, normalise, run the backbone, pool, join the levels.

Each output vector describes one patch of the working image at the shallowest requested level's stride
(8 px for EfficientNet-Lite levels 2 and 3). A 3x3 average over neighbours gives every patch a little
context (PatchCore's "locally aware" features); deeper levels are upsampled and concatenated.
The extractor owns its backbone weights so that a model file carries everything that produced its scores.

Two runtimes run the backbone: "torch" (traced and frozen TorchScript) and "onnx" (the same weights
exported to ONNX and run by ONNX Runtime, `onnx_backbone.py`). "auto", the default, picks ONNX when
onnxruntime is installed: measured side by side it is ~2x faster on CPU at equal scores (BENCHMARKS.md,
tiling section). "cuda" runs the backbone eagerly in half precision (channels-last, batched) on an NVIDIA
GPU and keeps the features there, so the nearest-neighbour search can run on the GPU too; "auto" picks it
whenever torch sees a GPU. The model file is the same for every runtime.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cellsight.data.images import to_float01, to_gray, to_rgb
from cellsight.errors import ConfigError
from cellsight.features.backbones import backbone_spec, build_feature_extractor, create_feature_extractor
from cellsight.features.onnx_backbone import OnnxBackbone, export_onnx, onnxruntime_version
from cellsight.features.threads import gpu_workers, map_images

RUNTIMES = ("auto", "torch", "onnx", "cuda")


def resolve_runtime(runtime: str) -> str:
    """The runtime to use: "auto" is "onnx" when onnxruntime is installed, else "torch"."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "onnx" if onnxruntime_version() is not None else "torch"
    if runtime == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime 'cuda' needs an NVIDIA GPU that torch can see; use 'auto' or 'onnx'")
    if runtime == "onnx" and onnxruntime_version() is None:
        raise ConfigError("runtime 'onnx' needs the onnxruntime package; install it or use runtime='torch'")
    return runtime


@dataclass(frozen=True)
class FeatureConfig:
    backbone: str
    layers: tuple[int, ...]
    image_size: int
    channels: int  # 1: images are converted to gray before the backbone; 3: to RGB

    def to_dict(self) -> dict[str, object]:
        return {
            "backbone": self.backbone,
            "layers": list(self.layers),
            "image_size": self.image_size,
            "channels": self.channels,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> FeatureConfig:
        layers = data["layers"]
        assert isinstance(layers, list)
        return cls(
            backbone=str(data["backbone"]),
            layers=tuple(int(v) for v in layers),
            image_size=int(str(data["image_size"])),
            channels=int(str(data["channels"])),
        )


class PatchFeatureExtractor:
    """Images (any size, 8/16-bit, gray or RGB) -> (N, h, w, D) float32 patch features."""

    def __init__(
        self, config: FeatureConfig, model: nn.Module, runtime: str = "auto", onnx_bytes: bytes | None = None
    ) -> None:
        """`onnx_bytes`: an already exported graph of these weights (a deployment folder's), else exported on use."""
        self.config = config
        self.model = model.eval()
        self.spec = backbone_spec(config.backbone)
        self.runtime = resolve_runtime(runtime)
        self._frozen: torch.jit.ScriptModule | None = None
        self._half: nn.Module | None = None
        self._onnx: OnnxBackbone | None = OnnxBackbone(onnx_bytes) if onnx_bytes is not None else None
        self._lazy = threading.Lock()  # the first calls may come from several threads at once
        if onnx_bytes is not None and self.runtime != "onnx":
            raise ValueError("onnx_bytes given but the runtime is torch")

    def onnx_bytes(self) -> bytes:
        """The backbone as ONNX (the graph in use, or a fresh deterministic export of the weights)."""
        return self._onnx.onnx_bytes if self._onnx is not None else export_onnx(self.model, self.config.image_size)

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        del state["_lazy"]  # a lock does not travel (copies, worker processes); each copy makes its own
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lazy = threading.Lock()

    def _onnx_session(self) -> OnnxBackbone:
        """The ONNX session, exported on first use; built once however many threads ask at the same time."""
        if self._onnx is None:
            with self._lazy:
                if self._onnx is None:
                    self._onnx = OnnxBackbone(self.onnx_bytes())
        return self._onnx

    def _forward(self, batch: torch.Tensor) -> list[torch.Tensor]:
        if self.runtime == "onnx":
            return self._onnx_session()(batch)
        if self.runtime == "cuda":
            return self._forward_half(batch, torch.device("cuda"))
        return self._forward_torch(batch)

    def _forward_half(self, batch: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
        """Eager half precision on `device` (cuDNN picks fast kernels per shape); features come back as float32."""
        if self._half is None:
            with self._lazy:
                if self._half is None:
                    # A copy: nn.Module.to works in place; the float32 CPU weights are what the model file stores.
                    half = copy.deepcopy(self.model).to(device=device, dtype=torch.float16)
                    self._half = half.to(memory_format=torch.channels_last)
        batch = batch.to(device=device, dtype=torch.float16, non_blocking=True)
        return [level.float() for level in self._half(batch.contiguous(memory_format=torch.channels_last))]

    def _forward_torch(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """The backbone, traced and frozen on first use: BatchNorm folded into the convolutions.

        About 1.7x faster than eager mode on a 2-core CPU. The working size is fixed per model, so
        the shapes the trace bakes in (TF "same" padding) never change; the batch size may.
        """
        if self._frozen is None:
            with self._lazy, torch.no_grad(), warnings.catch_warnings():
                if self._frozen is None:
                    warnings.simplefilter("ignore")  # torch.jit's deprecation and tracer notes
                    traced = torch.jit.trace(self.model, batch[:1], check_trace=False)
                    self._frozen = torch.jit.freeze(traced.eval())
        return list(self._frozen(batch))

    @classmethod
    def pretrained(
        cls, config: FeatureConfig, weights: str | None = None, runtime: str = "auto"
    ) -> PatchFeatureExtractor:
        """With the offline ImageNet weights of the backbone, or a local weights file for any timm model."""
        return cls(config, create_feature_extractor(config.backbone, config.layers, weights=weights), runtime)

    @classmethod
    def from_state(
        cls,
        config: FeatureConfig,
        state: dict[str, torch.Tensor],
        runtime: str = "auto",
        onnx_bytes: bytes | None = None,
    ) -> PatchFeatureExtractor:
        """With the exact weights stored in a model file (and, for a deployment, its verified ONNX graph)."""
        return cls(config, build_feature_extractor(config.backbone, config.layers, state), runtime, onnx_bytes)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {key: value.detach().contiguous() for key, value in self.model.state_dict().items()}

    @property
    def workers(self) -> int:
        """Threads for the per-image steps: all cores beside a GPU, one on the CPU runtimes."""
        return gpu_workers() if self.runtime == "cuda" else 1

    def prepare(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Resize to the working size and scale to [0, 1]: (N, S, S) gray or (N, S, S, 3) RGB float32.

        Images already at the working size (tiles) are only converted: no resampling.
        """
        size = self.config.image_size
        convert = to_gray if self.config.channels == 1 else to_rgb

        def one(image: np.ndarray) -> np.ndarray:
            work = to_float01(convert(image))
            if work.shape[:2] != (size, size):
                work = cv2.resize(work, (size, size), interpolation=cv2.INTER_AREA)
            return work

        return np.stack(map_images(one, images, self.workers)).astype(np.float32, copy=False)

    @torch.inference_mode()
    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        from cellsight.features.backbones import preprocess

        prepared = torch.from_numpy(self.prepare(images))
        if self.runtime == "cuda":  # normalise (and widen gray to 3 channels) on the GPU: 3x less to copy
            prepared = prepared.to("cuda", non_blocking=True)
        batch = preprocess(prepared, self.spec)
        levels = self._forward(batch.contiguous(memory_format=torch.channels_last))
        target = levels[0].shape[-2:]
        pooled = []
        for level in levels:
            level = F.avg_pool2d(level, kernel_size=3, stride=1, padding=1)
            if level.shape[-2:] != target:
                level = F.interpolate(level, size=target, mode="bilinear", align_corners=False)
            pooled.append(level)
        return torch.cat(pooled, dim=1).permute(0, 2, 3, 1).contiguous()
