"""cellsight: deep-learning visual inspection for battery and solar-cell production lines."""

import os

# Set before torch, faiss or onnxruntime load OpenMP (it reads this once): idle OpenMP threads sleep
# instead of spinning. Torch, faiss and ONNX Runtime take turns on the same cores for every image; with
# spinning, each pool's waiting threads steal the cores the next one needs (batch-1 latency halves on a
# 2-core CPU, BENCHMARKS.md "CPU profile"). A value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
