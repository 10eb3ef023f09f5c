"""The backbone as an ONNX graph, run by ONNX Runtime: the faster CPU path and the deployable artefact.

Why ONNX Runtime: on a 2-core CPU it runs EfficientNet-Lite0 about 1.5-2x faster than the frozen
TorchScript trace (its fused depthwise/pointwise kernels and graph optimisations), and the graph is a
self-contained file a line PC can run without torch. Only the backbone is exported; pooling and level
joining stay in torch (`PatchFeatureExtractor`), so both runtimes share every step after the backbone.

The graph has a static height and width (the model's working size: TF "same" padding is baked in for
that size, exactly as the TorchScript trace bakes it) and a dynamic batch axis.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

OPSET = 17
INPUT_NAME = "image"


_EXPORT = threading.Lock()
"""torch.onnx.export keeps process-wide state (GLOBALS.in_onnx_export): two exports at once, e.g. two
stations' first requests in one service, fail with assertion errors. One export at a time."""


def export_onnx(model: nn.Module, image_size: int) -> bytes:
    """Export the feature model (N, 3, S, S) -> [maps...] to ONNX bytes (opset 17, dynamic batch).

    Deterministic for a given torch version and weights (same bytes twice in one process; checked in
    tests), which is why the in-process ONNX path can derive the graph at load time from the hashed
    weights instead of storing a second copy of them in the model file.
    """
    model = model.eval()
    example = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad():
        n_outputs = len(model(example))
    outputs = [f"level{i}" for i in range(n_outputs)]
    axes: dict[str, dict[int, str]] = {name: {0: "batch"} for name in [INPUT_NAME, *outputs]}
    with _EXPORT, tempfile.TemporaryDirectory() as folder, torch.no_grad(), warnings.catch_warnings():
        path = Path(folder) / "backbone.onnx"
        warnings.simplefilter("ignore")  # tracer and exporter notes about TF-same padding
        torch.onnx.export(
            model,
            (example,),
            path,
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
        return path.read_bytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class OnnxBackbone:
    """An ONNX Runtime session over exported backbone bytes: torch NCHW batch in, torch maps out."""

    def __init__(self, onnx_bytes: bytes, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.onnx_bytes = onnx_bytes
        self.session: Any = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        self.input_shape = tuple(self.session.get_inputs()[0].shape)

    def __call__(self, batch: torch.Tensor) -> list[torch.Tensor]:
        expected = self.input_shape[2:]
        if tuple(batch.shape[2:]) != expected:
            raise ValueError(f"ONNX backbone was exported for {expected} inputs, got {tuple(batch.shape[2:])}")
        array = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        return [torch.from_numpy(out) for out in self.session.run(None, {INPUT_NAME: array})]


def onnxruntime_version() -> str | None:
    """The installed onnxruntime version, or None when it is not installed (then only torch can run)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return str(ort.__version__)
