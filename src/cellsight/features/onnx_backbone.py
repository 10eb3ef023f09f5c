"""The backbone as an ONNX graph, run by ONNX Runtime: the faster CPU path and the deployable artefact.

Why ONNX Runtime: on a 2-core CPU it runs EfficientNet-Lite0 about 1.5-2x faster than the frozen
TorchScript trace (its fused depthwise/pointwise kernels and graph optimisations), and the graph is a
self-contained file a line PC can run without torch. What is exported is the whole feature step
(`graph.FeatureGraph`: normalisation, backbone, pooling, level joining); deployments written before that
hold the backbone alone (input "image", NCHW), and those still run, with pooling in torch.

The session's threads do not spin while idle (`session.intra_op.allow_spinning` = 0): between two images
the cores go to faiss and OpenCV instead of to ONNX Runtime's waiting workers. Spinning only pays when one
session has the machine to itself back to back; on a 2-core line PC it cost more than it saved
(BENCHMARKS.md "CPU profile"). Threads: `CELLSIGHT_THREADS`, else every core (`threads.cpu_threads`).

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

from cellsight.features.graph import GRAPH_INPUT, GRAPH_OUTPUT, FeatureGraph
from cellsight.features.threads import cpu_threads

OPSET = 17
INPUT_NAME = "image"


_EXPORT = threading.Lock()
"""torch.onnx.export keeps process-wide state (GLOBALS.in_onnx_export): two exports at once, e.g. two
stations' first requests in one service, fail with assertion errors. One export at a time."""


def export_onnx(model: nn.Module, image_size: int) -> bytes:
    """Export to ONNX bytes (opset 17, dynamic batch): a `FeatureGraph` (N, S, S, C) -> (N, h, w, D), or
    a bare backbone (N, 3, S, S) -> [maps...].

    Deterministic for a given torch version and weights (same bytes twice in one process; checked in
    tests), which is why the in-process ONNX path can derive the graph at load time from the hashed
    weights instead of storing a second copy of them in the model file.
    """
    model = model.eval()
    if isinstance(model, FeatureGraph):
        example, input_name, outputs = model.example(image_size), GRAPH_INPUT, [GRAPH_OUTPUT]
    else:
        example, input_name = torch.zeros(1, 3, image_size, image_size), INPUT_NAME
        with torch.no_grad():
            outputs = [f"level{i}" for i in range(len(model(example)))]
    axes: dict[str, dict[int, str]] = {name: {0: "batch"} for name in [input_name, *outputs]}
    with _EXPORT, tempfile.TemporaryDirectory() as folder, torch.no_grad(), warnings.catch_warnings():
        path = Path(folder) / "backbone.onnx"
        warnings.simplefilter("ignore")  # tracer and exporter notes about TF-same padding
        torch.onnx.export(
            model,
            (example,),
            path,
            input_names=[input_name],
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
        return path.read_bytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def session_options(threads: int | None = None, spinning: bool = False) -> Any:
    """ONNX Runtime options: `threads` (default `cpu_threads()`), sequential, full graph optimisation."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cpu_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


class OnnxBackbone:
    """An ONNX Runtime session over exported bytes: a feature graph (pixels in, patch features out) or,
    from older deployments, a bare backbone (torch NCHW batch in, torch maps out)."""

    def __init__(self, onnx_bytes: bytes, threads: int | None = None, spinning: bool = False) -> None:
        import onnxruntime as ort

        self.onnx_bytes = onnx_bytes
        options = session_options(threads, spinning)
        self.session: Any = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        self.input_name = str(self.session.get_inputs()[0].name)
        self.input_shape = tuple(self.session.get_inputs()[0].shape)
        self.whole_graph = self.input_name == GRAPH_INPUT

    def features(self, pixels: np.ndarray) -> torch.Tensor:
        """(N, S, S, C) float32 pixels in [0, 1] -> (N, h, w, D) patch features (a feature graph only)."""
        if tuple(pixels.shape[1:]) != tuple(self.input_shape[1:]):
            raise ValueError(f"ONNX feature graph expects (N, {self.input_shape[1:]}) pixels, got {pixels.shape}")
        array = np.ascontiguousarray(pixels, dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {GRAPH_INPUT: array})[0])

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
