"""int8 post-training static quantisation of the feature graph (opt-in: `cellsight export --int8`).

ONNX Runtime's `quantize_static` in QDQ form: the convolutions' weights int8 per output channel, their
inputs uint8 with ranges calibrated (MinMax) on pixels of the station's own good images, everything else
(normalisation, pooling, joining) left in float32. Why opt-in only: an int8 model may become a default
only where verdicts agree with float32 on at least 99.9% of test images and image AUROC moves by at most
0.002 on every real set measured (issue 17); `benchmarks/speed.py`'s exactness table measures that.
`onnxruntime.quantization` ships with onnxruntime (it needs the `onnx` package, already a dependency).

Measured (EfficientNet-Lite0 levels 2+3, ELPV cells at 96 px, 16 calibration cells): the int8 features are
~45% off float32 (relative L2) on ONNX Runtime's AVX2 u8s8 kernels and ~30% with the same QDQ graph run
unfused (fake quantisation; percentile calibration 28%, 7-bit weights 38%), so most of the loss is the
quantisation itself, concentrated in the first layers: the stem alone costs 16%, the first depthwise
convolution alone 24%; leaving out every depthwise convolution and the first three others still leaves 6.6%.
Verdicts then move (BENCHMARKS.md "Speed side by side"), which is why `cellsight export --int8` refuses a
graph that changes any verdict on the station's images.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

QUANTIZATION = {
    "format": "QDQ (onnxruntime.quantization.quantize_static)",
    "weights": "int8, per output channel",
    "activations": "uint8, MinMax-calibrated",
    "operators": ["Conv"],
}
"""What `quantize_features` does, as recorded in deploy.json."""
CALIBRATION_BATCH = 8


def quantize_features(onnx_bytes: bytes, pixels: np.ndarray) -> bytes:
    """An int8 QDQ copy of a feature graph, calibrated on `pixels` ((N, S, S, C) float32 in [0, 1], as the
    graph takes them). Deterministic for the same graph and pixels."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(pixels) == 0:
        raise ValueError("int8 calibration needs at least one image")
    batches = [np.ascontiguousarray(pixels[i : i + CALIBRATION_BATCH], dtype=np.float32)
               for i in range(0, len(pixels), CALIBRATION_BATCH)]

    class Reader(CalibrationDataReader):
        def __init__(self, name: str) -> None:
            self.feeds = iter([{name: batch} for batch in batches])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.feeds, None)

    import onnx

    input_name = onnx.load_from_string(onnx_bytes).graph.input[0].name
    with tempfile.TemporaryDirectory() as folder:
        source, prepared, quantized = (Path(folder) / name for name in ("f32.onnx", "pre.onnx", "int8.onnx"))
        source.write_bytes(onnx_bytes)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(quantized),
            Reader(input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            op_types_to_quantize=list(QUANTIZATION["operators"]),
        )
        return quantized.read_bytes()
