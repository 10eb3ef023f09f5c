"""Exact nearest-neighbour search over a fixed memory bank, as one small ONNX Runtime graph.

PatchCore's default search is exact: every patch of an image against every bank row (1,024 x 8,192 x 152
for a 256 px image and the default bank, ~2.5 GFLOP; ~5 GFLOP at 16,384 rows, the default before). That is
a matrix product, and how fast it runs is the matrix product's speed: faiss's flat index ran it ~4x slower
than ONNX Runtime's MLAS kernels on the 2-core AVX2 machine of BENCHMARKS.md (faiss also adds a separate
pass to find each row's minimum).
The graph:

    d(q, b)^2 = ||q - m||^2 + min_b ( ||b - m||^2 - 2 (q - m) . (b - m) )

with m the bank's mean (centring shrinks the terms that cancel in float32) and the bank in chunks of
`CHUNK_ROWS` rows, each a Gemm (the -2 and the bank norms folded in) followed by a row minimum, so no
query x bank matrix is ever held whole. Results match the flat scan within float32 rounding
(tests/unit/detectors/test_detectors_patchcore_search.py). The session's threads follow `CELLSIGHT_THREADS`
and do not spin, like the backbone's (`features/onnx_backbone.py`).

One call per image keeps a score independent of which images share its batch: the kernels' blocking
follows the shape, and every image of a model has the same number of patches.

`ExactSearch` runs this full scan only where it must: on large banks it first bounds the distances on a few
principal directions and scans exactly only the groups of rows that may hold the nearest one
(`pruned_search.py`); results are the same within float32 rounding.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from cellsight.detectors.pruned_search import PrunedSearch, PruneSettings
from cellsight.features.onnx_backbone import session_options

CHUNK_ROWS = 4096
"""Bank rows per Gemm: a 1,024 x 4,096 float32 block (16 MB) per image; measured no slower than smaller."""
OPSET = 17
DEFAULT_PRUNING = PruneSettings()


def search_graph(bank: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> bytes:
    """The ONNX graph: queries (n, D) float32 -> (n,) squared L2 distance to the nearest bank row."""
    from onnx import TensorProto, helper, numpy_helper

    bank = np.asarray(bank, dtype=np.float64)
    mean = bank.mean(axis=0)
    centred = bank - mean
    rows, dim = bank.shape
    inits = [
        numpy_helper.from_array(mean.astype(np.float32), "mean"),
        numpy_helper.from_array(np.array([-2.0], dtype=np.float32), "minus_two"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "last_axis"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("Sub", ["queries", "mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "minus_two"], ["scaled"]),
        helper.make_node("Mul", ["centred", "centred"], ["squares"]),
        helper.make_node("ReduceSum", ["squares", "last_axis"], ["query_norms"], keepdims=0),
    ]
    minima = []
    for i, start in enumerate(range(0, rows, chunk_rows)):
        part = centred[start : start + chunk_rows]
        inits.append(numpy_helper.from_array(np.ascontiguousarray(part.T, dtype=np.float32), f"bank{i}"))
        inits.append(numpy_helper.from_array(np.square(part).sum(axis=1).astype(np.float32), f"norms{i}"))
        nodes.append(helper.make_node("Gemm", ["scaled", f"bank{i}", f"norms{i}"], [f"partial{i}"]))
        nodes.append(helper.make_node("ReduceMin", [f"partial{i}"], [f"minimum{i}"], axes=[1], keepdims=0))
        minima.append(f"minimum{i}")
    nodes += [
        helper.make_node("Min", minima, ["nearest"]),
        helper.make_node("Add", ["nearest", "query_norms"], ["unclamped"]),
        helper.make_node("Max", ["unclamped", "zero"], ["squared"]),
    ]
    graph = helper.make_graph(
        nodes,
        "exact_nearest",
        [helper.make_tensor_value_info("queries", TensorProto.FLOAT, ["n", dim])],
        [helper.make_tensor_value_info("squared", TensorProto.FLOAT, ["n"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    return bytes(model.SerializeToString())


class ExactSearch:
    """Exact nearest bank row for every query: `squared(queries)` -> (n,) float32 squared L2 distances.

    On a bank large enough to gain (`PruneSettings.applies`), the search skips most of the bank with a
    certificate (`pruned_search.py`: 1.56x faster per 256 px image at batch 1, ~1.2x at batch 16, on an
    8,192-row ELPV bank; same results within float32 rounding); the full scan answers the rest.
    `prune=None` always scans in full.
    """

    def __init__(self, bank: np.ndarray, chunk_rows: int = CHUNK_ROWS,
                 prune: PruneSettings | None = DEFAULT_PRUNING) -> None:
        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.chunk_rows = chunk_rows
        self.prune = prune if prune is not None and prune.applies(self.bank) else None
        self._session: Any = None
        self._pruned: PrunedSearch | None = None
        self._lazy = threading.Lock()

    @property
    def dim(self) -> int:
        return int(self.bank.shape[1])

    def _open(self) -> Any:
        if self._session is None:
            with self._lazy:
                if self._session is None:
                    import onnxruntime as ort

                    graph = search_graph(self.bank, self.chunk_rows)
                    self._session = ort.InferenceSession(graph, session_options(), providers=["CPUExecutionProvider"])
        return self._session

    def _pruning(self) -> PrunedSearch:
        if self._pruned is None:
            with self._lazy:
                if self._pruned is None:
                    assert self.prune is not None
                    self._pruned = PrunedSearch(self.bank, self.full_squared, self.prune)
        return self._pruned

    def squared(self, queries: np.ndarray) -> np.ndarray:
        """(n, D) -> (n,) squared distance of each query to its nearest bank row (>= 0)."""
        array = self._check(queries)
        if len(array) == 0:
            return np.zeros(0, dtype=np.float32)
        if self.prune is not None:
            return self._pruning().squared(array)
        return self.full_squared(array)

    def full_squared(self, queries: np.ndarray) -> np.ndarray:
        """`squared` by the full scan: every query against every bank row."""
        array = self._check(queries)
        if len(array) == 0:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self._open().run(None, {"queries": array})[0], dtype=np.float32)

    def _check(self, queries: np.ndarray) -> np.ndarray:
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be (n, {self.dim}), got {queries.shape}")
        return np.ascontiguousarray(queries, dtype=np.float32)

    def __reduce__(self) -> tuple[type[ExactSearch], tuple[np.ndarray, int, PruneSettings | None]]:
        """Pickles as its bank (a session does not travel); the copy opens its own on first use."""
        return ExactSearch, (self.bank, self.chunk_rows, self.prune)
