"""Patch features for anomaly detection: resize, normalise, run the backbone, pool, join the levels.

Each output vector describes one patch of the working image at the shallowest requested level's stride
(8 px for EfficientNet-Lite levels 2 and 3). A 3x3 average over neighbours gives every patch a little
context (PatchCore's "locally aware" features); deeper levels are upsampled and concatenated.
The extractor owns its backbone weights so that a model file carries everything that produced its scores.

Two runtimes run the backbone: "torch" (traced and frozen TorchScript, pooling in eager torch: the
reference) and "onnx" (the whole feature step, `graph.FeatureGraph`, exported to ONNX and run by ONNX
Runtime, `onnx_backbone.py`). "auto", the default, picks ONNX when onnxruntime is installed: measured side
by side it is ~2x faster on CPU at equal verdicts (BENCHMARKS.md, tiling and CPU profile sections).
"openvino" runs the same graph on OpenVINO (optional extra, `openvino_backbone.py`); never picked by "auto".
"cuda" runs the backbone eagerly in half precision (channels-last, batched) on an NVIDIA GPU and keeps
the features there, so the nearest-neighbour search can run on the GPU too; "auto" picks it whenever
torch sees a GPU. The model file is the same for every runtime.
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
from torch import nn

from cellsight.data.images import to_float01, to_gray, to_rgb
from cellsight.errors import ConfigError
from cellsight.features.backbones import backbone_spec, build_feature_extractor, create_feature_extractor
from cellsight.features.graph import FeatureGraph, pool_levels
from cellsight.features.onnx_backbone import OnnxBackbone, export_onnx, onnxruntime_version
from cellsight.features.openvino_backbone import OpenVinoFeatures, openvino_version
from cellsight.features.resample import resize_matrix
from cellsight.features.threads import apply_thread_setting, gpu_workers, map_images

RUNTIMES = ("auto", "torch", "onnx", "openvino", "cuda")


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
    if runtime == "openvino" and openvino_version() is None:
        raise ConfigError("runtime 'openvino' needs the openvino package: pip install 'cellsight[openvino]'")
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
        self,
        config: FeatureConfig,
        model: nn.Module,
        runtime: str = "auto",
        onnx_bytes: bytes | None = None,
        device: str | None = None,
    ) -> None:
        """`onnx_bytes`: an already exported graph of these weights (a deployment folder's), else exported on use.

        `device`: where the "cuda" runtime's path runs ("cuda" by default; the tests run it with "cpu").
        """
        self.config = config
        self.model = model.eval()
        self.spec = backbone_spec(config.backbone)
        self.runtime = "cuda" if runtime == "cuda" and device is not None else resolve_runtime(runtime)
        self.device = torch.device(device or "cuda") if self.runtime == "cuda" else torch.device("cpu")
        self._frozen: torch.jit.ScriptModule | None = None
        self._half: nn.Module | None = None
        self._onnx: OnnxBackbone | None = OnnxBackbone(onnx_bytes) if onnx_bytes is not None else None
        self._openvino: OpenVinoFeatures | None = None
        self._lazy = threading.Lock()  # the first calls may come from several threads at once
        if onnx_bytes is not None and self.runtime != "onnx":
            raise ValueError("onnx_bytes given but the runtime is torch")
        apply_thread_setting()

    @property
    def runs_whole_graph(self) -> bool:
        """True when ONNX Runtime runs the whole feature step (not a bare backbone from an older deployment)."""
        return self._onnx is not None and self._onnx.whole_graph

    def graph(self) -> FeatureGraph:
        """The whole feature step as one module over this extractor's weights (what gets exported)."""
        return FeatureGraph(self.model, self.spec, self.config.channels)

    def onnx_bytes(self) -> bytes:
        """The feature graph as ONNX (the graph in use, or a fresh deterministic export of the weights)."""
        return self._onnx.onnx_bytes if self._onnx is not None else export_onnx(self.graph(), self.config.image_size)

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
        if self.runtime == "onnx":  # a bare backbone graph (a format-1 deployment's); `__call__` opened it
            assert self._onnx is not None and not self._onnx.whole_graph
            return self._onnx(batch)
        if self.runtime == "cuda":
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
            return self._forward_half(batch, self.device, dtype)
        return self._forward_torch(batch)

    def _forward_half(
        self, batch: torch.Tensor, device: torch.device, dtype: torch.dtype = torch.float16
    ) -> list[torch.Tensor]:
        """Eager half precision on `device` (cuDNN picks fast kernels per shape); features come back as float32.

        The device path run on the CPU (`device="cpu"`, the tests) passes float32: torch's CPU half
        convolutions are emulated and ~100x slower; their numerics are checked in test_features_half_precision.
        """
        if self._half is None:
            with self._lazy:
                if self._half is None:
                    # A copy: nn.Module.to works in place; the float32 CPU weights are what the model file stores.
                    half = copy.deepcopy(self.model).to(device=device, dtype=dtype)
                    self._half = half.to(memory_format=torch.channels_last)
        batch = batch.to(device=device, dtype=dtype, non_blocking=True)
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

        Images already at the working size (tiles) are only converted: no resampling. A gray image for an
        RGB model is resized once and then repeated (OpenCV resizes channels independently, so this is
        bit for bit what resizing three equal channels gives, at a third of the work).
        """
        size = self.config.image_size
        rgb = self.config.channels == 3

        def one(image: np.ndarray) -> np.ndarray:
            work = self.resized(image, size, size)
            return to_rgb(work) if rgb and work.ndim == 2 else work

        return np.stack(map_images(one, images, self.workers)).astype(np.float32, copy=False)

    def resized(self, image: np.ndarray, height: int, width: int) -> np.ndarray:
        """One image converted as `prepare` converts it ([0, 1] float32; gray where the image or the model is)
        and resized by INTER_AREA to (height, width); gray stays HxW (`prepare` widens it).

        PatchCore's aspect-keeping mode resizes through this before cutting tiles, so its tiles, already at the
        working size, reach the backbone as the same pixels a whole square image would.
        """
        gray = image.ndim == 2 or image.shape[2] == 1
        work = to_float01(to_gray(image) if gray or self.config.channels == 1 else image)
        if work.shape[:2] != (height, width):
            work = cv2.resize(work, (width, height), interpolation=cv2.INTER_AREA)
        return work

    def prepare_on_device(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """`prepare` on `self.device`: the pixels travel as they are (uint8: a quarter of float32) and are
        scaled and shrunk there, by OpenCV's INTER_AREA weights as matrices (`resample.py`), a batch of
        same-sized images at once. Images smaller than the working size are enlarged by OpenCV first.
        Returns (N, S, S, C) float32 on the device."""
        size, channels, device = self.config.image_size, self.config.channels, self.device
        # gray stays one channel on the way (widened to the model's three on the device)
        converted = [to_gray(im) if channels == 1 or im.ndim == 2 or im.shape[2] == 1 else im for im in images]
        out = torch.empty((len(images), size, size, channels), dtype=torch.float32, device=device)
        groups: dict[tuple[tuple[int, ...], str], list[int]] = {}
        for i, image in enumerate(converted):
            groups.setdefault((image.shape, image.dtype.str), []).append(i)
        for (shape, _), members in groups.items():
            height, width = shape[:2]
            if height < size or width < size:  # enlarging: OpenCV's INTER_AREA rule, on the CPU
                small = np.stack([cv2.resize(to_float01(converted[i]), (size, size), interpolation=cv2.INTER_AREA)
                                  for i in members])
                out[members] = torch.from_numpy(small.reshape(len(members), size, size, -1)).to(device)
                continue
            stack = np.stack([converted[i] for i in members])
            scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(stack.dtype)
            if stack.dtype == np.uint16 or stack.dtype == np.bool_:
                stack = stack.astype(np.float32)
            x = torch.from_numpy(stack).to(device).float()  # pageable: pinning a fresh buffer per batch costs more
            if scale is not None:
                x = x / scale
            x = x.reshape(len(members), height, width, -1).permute(0, 3, 1, 2)
            if (height, width) != (size, size):
                rows = torch.from_numpy(resize_matrix(height, size)).to(device, torch.float32)
                cols = torch.from_numpy(resize_matrix(width, size)).to(device, torch.float32)
                x = torch.matmul(torch.matmul(rows, x), cols.T)
            out[members] = x.permute(0, 2, 3, 1)
        return out

    @torch.inference_mode()
    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        from cellsight.features.backbones import preprocess

        if self.runtime == "openvino":
            if self._openvino is None:
                with self._lazy:
                    if self._openvino is None:
                        self._openvino = OpenVinoFeatures(self.onnx_bytes())
            pixels = self.prepare(images)
            return self._openvino.features(pixels.reshape(*pixels.shape[:3], self.config.channels))
        if self.runtime == "onnx":
            session = self._onnx_session()
            if session.whole_graph:
                pixels = self.prepare(images)
                return session.features(pixels.reshape(*pixels.shape[:3], self.config.channels))
        # "cuda": scale, shrink and normalise on the device: raw pixels are all that travel
        on_device = self.runtime == "cuda"
        prepared = self.prepare_on_device(images) if on_device else torch.from_numpy(self.prepare(images))
        batch = preprocess(prepared, self.spec)
        levels = self._forward(batch.contiguous(memory_format=torch.channels_last))
        return pool_levels(levels).permute(0, 2, 3, 1).contiguous()
