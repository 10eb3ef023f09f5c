"""Exact nearest-neighbour search that skips most of the bank, with a certificate for what it skips.

The full scan (`exact_search.py`) multiplies every patch by every bank row. Most of that work only
confirms that a row is far. Here the bank is cut into groups of nearby rows (a balanced tree of median
splits along principal axes), and a cheap lower bound of every row's squared distance tells which groups
may hold a query's nearest row; only those are searched exactly:

1. Bound (one ONNX Runtime graph). With P the top-k principal directions of the bank (orthonormal) and
   r(x) = |x - m - P P^T (x - m)| the part of a centred vector outside them,

       |q - b|^2 = |P^T (q - b)|^2 + |r-part of (q - b)|^2 >= |P^T q - P^T b|^2 + (r(q) - r(b))^2,

   which is the squared distance between the (k + 1)-dim vectors [P^T (x - m), r(x)]: a Gemm of k + 1
   columns instead of D, and a minimum per group -> (n, groups) lower bounds.
2. Exact (numpy/BLAS). Each query's group with the smallest bound is searched exactly, which gives an upper
   bound u on its nearest distance; then every other group whose bound is below u (plus a float32 margin)
   is searched exactly too. A group left out has every row's distance >= its bound >= u >= the answer, so
   the minimum over the searched groups is the full scan's minimum: the certificate holds by construction.
3. Fallback: a query for which more than `FALLBACK_FRACTION` of the groups would need searching (far from
   everything, or non-finite) goes to the full scan instead, as do all queries of a bank too small to gain.

Results equal the full scan's within float32 rounding (both compute |q - m|^2 + |b - m|^2 - 2 (q - m).(b - m)
on the centred bank; the bound's margin covers its rounding). Work per image is a function of the image
alone (one call per image, as `PatchCore` makes them), so scores stay independent of batching.
Threads: the graph follows `CELLSIGHT_THREADS` (`session_options`); the exact step runs its per-group products
on as many threads, numpy's BLAS held at one thread meanwhile (its own threads cost more than these small products).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from cellsight.features.onnx_backbone import session_options
from cellsight.features.threads import cpu_threads

BOUND_DIMS = 48
"""Principal directions in the bound (k): more tighten it (fewer groups searched) but cost more per row."""
GROUP_ROWS = 64
"""Bank rows per group: smaller groups are searched more selectively but cost more Python per image."""
BOUND_CHUNK_GROUPS = 8
"""Groups per Gemm in the bound graph (a 1,024 x 512 block for 64-row groups: stays in cache)."""
FALLBACK_FRACTION = 0.5
"""A query that would search more than this fraction of the groups goes to the full scan instead."""
MIN_ROWS = 2048
"""Banks smaller than this are scanned in full: too few groups to skip."""
MARGIN = 1e-4
"""Margin on the bound, relative to |q - m|^2 + max |b - m|^2: covers float32 rounding in both searches."""
OPSET = 17


@dataclass(frozen=True)
class PruneSettings:
    """How the bank is cut and bounded; every choice gives the same results, only the work differs."""

    bound_dims: int = BOUND_DIMS
    group_rows: int = GROUP_ROWS
    chunk_groups: int = BOUND_CHUNK_GROUPS
    fallback_fraction: float = FALLBACK_FRACTION
    min_rows: int = MIN_ROWS

    def applies(self, bank: np.ndarray) -> bool:
        """Whether pruning can pay on this bank: enough rows for several groups, more dims than the bound."""
        rows, dim = bank.shape
        return rows >= max(self.min_rows, 4 * self.group_rows) and dim > self.bound_dims + 1


def balanced_groups(centred: np.ndarray, group_rows: int) -> list[np.ndarray]:
    """Row indices in groups of nearby rows: median splits along each part's principal axis, to <= group_rows.

    Deterministic (no random start); sizes differ by at most one row per split, so groups are balanced.
    """
    data = np.asarray(centred, dtype=np.float32)
    parts = [np.arange(len(data))]
    done: list[np.ndarray] = []
    while parts:
        rows = parts.pop()
        if len(rows) <= group_rows:
            done.append(rows)
            continue
        part = data[rows] - data[rows].mean(axis=0)
        order = np.argsort(part @ _principal_axis(part.T @ part), kind="stable")
        half = len(rows) // 2
        parts += [rows[order[half:]], rows[order[:half]]]
    return done


def _principal_axis(covariance: np.ndarray, steps: int = 50) -> np.ndarray:
    """The top eigenvector of a covariance, nearly, by power iteration (a split needs a good axis, not the
    best: 127 LAPACK eigensolvers took seconds on a loaded 2-core machine)."""
    axis = np.sqrt(np.maximum(np.diag(covariance), 0.0)) + 1e-12
    for _ in range(steps):
        axis = covariance @ axis
        axis /= max(float(np.linalg.norm(axis)), 1e-30)
    return axis.astype(np.float32)


class PrunedSearch:
    """`squared(queries)` -> (n,) squared L2 distance to the nearest bank row, like `ExactSearch`, doing less work.

    `full` is the full scan (a callable (n, D) -> (n,)), used for the fallback rows.
    """

    def __init__(self, bank: np.ndarray, full: Any, settings: PruneSettings | None = None) -> None:
        self.settings = settings or PruneSettings()
        self.full = full
        with _one_blas_thread():
            self._build(np.asarray(bank, dtype=np.float64))
        self._session: Any = None
        self._lazy = threading.Lock()
        self.last_stats: dict[str, float] = {}

    def _build(self, bank64: np.ndarray) -> None:
        s = self.settings
        self.dim = bank64.shape[1]
        mean = bank64.mean(axis=0)
        centred = bank64 - mean
        _, vectors = np.linalg.eigh(centred.T @ centred)
        directions = vectors[:, ::-1][:, : s.bound_dims]  # (D, k), orthonormal
        groups = balanced_groups(centred, s.group_rows)
        width = max(len(g) for g in groups)
        # Groups padded to one width with repeats of their own rows (a repeat changes no minimum).
        order = np.concatenate([np.resize(g, width) for g in groups])
        self.groups = len(groups)
        self.width = width
        grouped = centred[order]
        norms = np.square(grouped).sum(axis=1)
        projected = grouped @ directions
        residual = np.sqrt(np.maximum(norms - np.square(projected).sum(axis=1), 0.0))
        self.mean = mean.astype(np.float32)
        # Per group, (D + 1, width): [-2 (b - m); |b - m|^2] as columns, so [q - m, 1] times it is the distance
        # less |q - m|^2, in one product.
        lifted = np.concatenate([-2.0 * grouped, norms[:, None]], axis=1).reshape(self.groups, width, self.dim + 1)
        self.lifted = np.ascontiguousarray(lifted.transpose(0, 2, 1), dtype=np.float32)
        self.max_norm = float(norms.max())
        self._graph = _bound_graph(mean, directions, np.concatenate([projected, residual[:, None]], axis=1), norms,
                                   width, s.chunk_groups)

    def _open(self) -> Any:
        if self._session is None:
            with self._lazy:
                if self._session is None:
                    import onnxruntime as ort

                    self._session = ort.InferenceSession(self._graph, session_options(),
                                                         providers=["CPUExecutionProvider"])
        return self._session

    def bounds(self, queries: np.ndarray) -> np.ndarray:
        """(n, groups) lower bounds of each query's squared distance to each group's nearest row."""
        return np.asarray(self._open().run(None, {"queries": queries})[0], dtype=np.float32)

    def squared(self, queries: np.ndarray) -> np.ndarray:
        """(n, D) float32 -> (n,) squared distance of each query to its nearest bank row (>= 0)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n = len(queries)
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        bounds = self.bounds(queries)
        lifted = np.empty((n, self.dim + 1), dtype=np.float32)  # [q - m, 1]: one product gives |b|^2 - 2 q.b
        np.subtract(queries, self.mean, out=lifted[:, :-1])
        lifted[:, -1] = 1.0
        query_norms = np.square(lifted[:, :-1]).sum(axis=1)
        margin = MARGIN * (query_norms + self.max_norm)
        everyone = np.arange(n)
        with _one_blas_thread():  # small products: the search's own threads split the groups instead
            first = bounds.argmin(axis=1)
            nearest = self._search_groups(lifted, everyone, first, np.full(n, np.inf, dtype=np.float32))
            best = nearest + query_norms
            visit = bounds - margin[:, None] < best[:, None]
            visit[everyone, first] = False
            fall = (visit.sum(axis=1) > self.settings.fallback_fraction * self.groups) | ~np.isfinite(best)
            visit[fall] = False
            groups, rows = np.nonzero(visit.T)  # sorted by group
            best = self._search_groups(lifted, rows, groups, nearest) + query_norms
        if fall.any():
            best[fall] = self.full(queries[fall])
        self.last_stats = {"searched": (len(rows) + n) / (n * self.groups), "fallback": float(fall.mean())}
        return np.maximum(best, 0.0)

    def _search_groups(self, lifted: np.ndarray, rows: np.ndarray, groups: np.ndarray,
                       nearest: np.ndarray) -> np.ndarray:
        """`nearest` (|b|^2 - 2 q.b so far, per query) lowered by the rows of group groups[i] for query rows[i].

        One product per group, the groups dealt round-robin to `cpu_threads()` workers (numpy releases the
        GIL in its products); the minima are taken here in one pass, so the result does not depend on the
        threads. `groups` must be sorted or the pairs are sorted here.
        """
        if len(rows) == 0:
            return nearest
        if np.any(groups[1:] < groups[:-1]):
            order = np.argsort(groups, kind="stable")
            rows, groups = rows[order], groups[order]
        cuts = np.flatnonzero(groups[1:] != groups[:-1]) + 1
        spans = list(zip(np.r_[0, cuts].tolist(), np.r_[cuts, len(groups)].tolist(), strict=True))
        lifted_bank = self.lifted

        def search(part: list[tuple[int, int]]) -> list[np.ndarray]:
            return [(lifted[rows[a:b]] @ lifted_bank[groups[a]]).min(axis=1) for a, b in part]

        workers = min(cpu_threads(), len(spans))
        if workers <= 1:
            found = search(spans)
        else:
            done = list(_pool(workers).map(search, [spans[w::workers] for w in range(workers)]))
            found = [done[i % workers][i // workers] for i in range(len(spans))]
        out = nearest.copy()
        np.minimum.at(out, rows, np.concatenate(found))
        return out


def _pool(workers: int) -> ThreadPoolExecutor:
    """The search's threads, per process: a pool inherited through fork has no threads and would hang."""
    return _process_pool(workers, os.getpid())


@cache
def _process_pool(workers: int, pid: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cellsight-search")


_blas_lock = threading.Lock()
_blas_users = 0
_blas_threads: list[int] = []


@cache
def _blas_libraries() -> list[Any]:
    """numpy's BLAS libraries as threadpoolctl controls them (found once: the search costs ms per call)."""
    from threadpoolctl import ThreadpoolController

    return list(ThreadpoolController().select(user_api="blas").lib_controllers)


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """numpy's BLAS on one thread while any search runs (OpenBLAS wakes every core for a 70 x 153 x 64
    product, which costs more than the product). The setting is the process's: counted, so concurrent
    searches (stations of a pipelined line) restore it only when the last one leaves."""
    global _blas_users, _blas_threads
    with _blas_lock:
        if _blas_users == 0:
            _blas_threads = [library.num_threads for library in _blas_libraries()]
            for library in _blas_libraries():
                library.set_num_threads(1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for library, threads in zip(_blas_libraries(), _blas_threads, strict=True):
                    library.set_num_threads(threads)


def _bound_graph(mean: np.ndarray, directions: np.ndarray, augmented: np.ndarray, norms: np.ndarray,
                 width: int, chunk_groups: int) -> bytes:
    """ONNX graph: queries (n, D) -> (n, groups) lower bounds (see the module docstring)."""
    from onnx import TensorProto, helper, numpy_helper

    rows = augmented.shape[0]
    groups = rows // width
    inits = [
        numpy_helper.from_array(mean.astype(np.float32), "mean"),
        numpy_helper.from_array(np.ascontiguousarray(directions, dtype=np.float32), "directions"),
        numpy_helper.from_array(np.array([-2.0], dtype=np.float32), "minus_two"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "last_axis"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("Sub", ["queries", "mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "centred"], ["squares"]),
        helper.make_node("ReduceSum", ["squares", "last_axis"], ["query_norms"], keepdims=1),
        helper.make_node("MatMul", ["centred", "directions"], ["projected"]),
        helper.make_node("Mul", ["projected", "projected"], ["projected_squares"]),
        helper.make_node("ReduceSum", ["projected_squares", "last_axis"], ["projected_norms"], keepdims=1),
        helper.make_node("Sub", ["query_norms", "projected_norms"], ["residual_squared"]),
        helper.make_node("Max", ["residual_squared", "zero"], ["residual_clamped"]),
        helper.make_node("Sqrt", ["residual_clamped"], ["residual"]),
        helper.make_node("Concat", ["projected", "residual"], ["augmented"], axis=1),
        helper.make_node("Mul", ["augmented", "minus_two"], ["scaled"]),
    ]
    minima = []
    for i, start in enumerate(range(0, groups, chunk_groups)):
        stop = min(start + chunk_groups, groups)
        part = slice(start * width, stop * width)
        inits += [
            numpy_helper.from_array(np.ascontiguousarray(augmented[part].T, dtype=np.float32), f"bank{i}"),
            numpy_helper.from_array(norms[part].astype(np.float32), f"norms{i}"),
            numpy_helper.from_array(np.array([0, stop - start, width], dtype=np.int64), f"shape{i}"),
        ]
        nodes += [
            helper.make_node("Gemm", ["scaled", f"bank{i}", f"norms{i}"], [f"partial{i}"]),
            helper.make_node("Reshape", [f"partial{i}", f"shape{i}"], [f"by_group{i}"]),
            helper.make_node("ReduceMin", [f"by_group{i}"], [f"minimum{i}"], axes=[2], keepdims=0),
        ]
        minima.append(f"minimum{i}")
    nodes += [
        helper.make_node("Concat", minima, ["group_minima"], axis=1),
        helper.make_node("Add", ["group_minima", "query_norms"], ["bounds"]),
    ]
    graph = helper.make_graph(
        nodes,
        "pruned_bounds",
        [helper.make_tensor_value_info("queries", TensorProto.FLOAT, ["n", int(mean.shape[0])])],
        [helper.make_tensor_value_info("bounds", TensorProto.FLOAT, ["n", groups])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    return bytes(model.SerializeToString())
