"""The feature graph on OpenVINO's CPU plugin: an optional runtime (`pip install 'cellsight[openvino]'`).

Why offer it beside ONNX Runtime: it is Intel's CPU runtime, and on some line PCs (Intel cores with
AVX-512 or AMX) it is the faster of the two; on others it is not (BENCHMARKS.md "Speed side by side"
has a row per runtime, measured on the machine named there). It runs the very graph ONNX Runtime runs
(`graph.FeatureGraph`'s ONNX bytes), compiled once per batch size with static shapes.

Precision is pinned to float32 (`INFERENCE_PRECISION_HINT`): left alone, OpenVINO silently runs bf16 on
CPUs that have it, which moves scores by far more than float rounding. Threads: `CELLSIGHT_THREADS`, else
every core (`threads.cpu_threads`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cellsight.features.graph import GRAPH_INPUT
from cellsight.features.threads import cpu_threads


def openvino_version() -> str | None:
    """The installed OpenVINO version, or None when it is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return str(openvino.__version__)


class OpenVinoFeatures:
    """OpenVINO over feature-graph ONNX bytes: (N, S, S, C) pixels in, (N, h, w, D) features out."""

    def __init__(self, onnx_bytes: bytes, threads: int | None = None) -> None:
        import openvino as ov

        self.onnx_bytes = onnx_bytes
        self._core = ov.Core()
        self._model: Any = self._core.read_model(onnx_bytes)
        names = [name for port in self._model.inputs for name in port.get_names()]
        if GRAPH_INPUT not in names:
            raise ValueError(f"OpenVINO runs feature graphs (input {GRAPH_INPUT!r}); this graph has {names}")
        self._config = {
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": threads or cpu_threads(),
            "PERFORMANCE_HINT": "LATENCY",
        }
        self._compiled: dict[int, Any] = {}

    def _for_batch(self, n: int) -> Any:
        """The model compiled for batch `n` (static shapes run faster than a dynamic batch axis)."""
        if n not in self._compiled:
            model = self._model.clone()
            shape = list(self._model.inputs[0].get_partial_shape())
            model.reshape({GRAPH_INPUT: [n, *(int(str(d)) for d in shape[1:])]})
            self._compiled[n] = self._core.compile_model(model, "CPU", self._config).create_infer_request()
        return self._compiled[n]

    def features(self, pixels: np.ndarray) -> torch.Tensor:
        request = self._for_batch(pixels.shape[0])
        array = np.ascontiguousarray(pixels, dtype=np.float32)
        request.infer({GRAPH_INPUT: array})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())
