"""Greedy k-center coreset selection that stays fast on millions of patch features.

PatchCore's memory bank keeps the patches that best cover the good-image feature space: greedy k-center
(farthest-point) selection. The textbook loop picks one point per pass over all N features, so it costs
N x M memory passes; that is why anomalib's PatchCore needs hours on a 2-core CPU for ~1,000 images.

Here each round (a) takes the C points farthest from the bank chosen so far, (b) runs the greedy loop
among those candidates only, for as long as the best candidate is still at least as far from the bank as
the farthest point outside the candidates (distances only shrink, so each such pick is exactly the pick
the sequential loop would make), and (c) updates every point's distance with one BLAS-backed faiss search
against just the new points. The result is the sequential greedy selection (up to ties) at a small
fraction of the cost: one pass over N per round instead of per point.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch


def greedy_coreset(
    features: np.ndarray,
    size: int,
    batch: int = 128,
    candidate_factor: int = 4,
    seed: int = 0,
) -> np.ndarray:
    """Indices of `size` rows of `features` (N x D float32) chosen by batched greedy k-center."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    n = features.shape[0]
    if size >= n:
        return np.arange(n)
    if size <= 0:
        raise ValueError(f"coreset size must be positive, got {size}")
    rng = np.random.default_rng(seed)
    first = int(rng.integers(n))
    selected = [first]
    min_dist = _distances_to(features, features[[first]])
    min_dist[first] = -1.0
    while len(selected) < size:
        take = min(batch, size - len(selected))
        n_candidates = min(n, take * candidate_factor)
        order = np.argpartition(min_dist, n - n_candidates)
        candidates = order[n - n_candidates :]
        outside_max = float(min_dist[order[: n - n_candidates]].max()) if n_candidates < n else -1.0
        chosen = _greedy_among(features, candidates, min_dist[candidates], take, stop_below=outside_max)
        selected.extend(chosen.tolist())
        np.minimum(min_dist, _distances_to(features, features[chosen]), out=min_dist)
        min_dist[chosen] = -1.0
    return np.asarray(selected, dtype=np.int64)


def exact_greedy_coreset(features: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """The textbook one-point-per-pass loop; the reference that `greedy_coreset` approximates."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    n = features.shape[0]
    if size >= n:
        return np.arange(n)
    first = int(np.random.default_rng(seed).integers(n))
    start = _distances_to(features, features[[first]])
    start[first] = -1.0
    return _greedy_among(features, np.arange(n), start, size - 1, first=first)


def _greedy_among(
    features: np.ndarray,
    candidates: np.ndarray,
    candidate_dist: np.ndarray,
    take: int,
    first: int | None = None,
    stop_below: float = -1.0,
) -> np.ndarray:
    """Sequential farthest-point picks among `candidates`, at most `take`, while the best is >= stop_below.

    The first pick is always made: it is the global farthest point.
    """
    points = features[candidates]
    dist = candidate_dist.astype(np.float32, copy=True)
    picked: list[int] = [] if first is None else [first]
    for count in range(take):
        local = int(np.argmax(dist))
        if count > 0 and dist[local] < stop_below:
            break
        picked.append(int(candidates[local]))
        diff = points - points[local]
        np.minimum(dist, np.einsum("ij,ij->i", diff, diff), out=dist)
        dist[local] = -1.0
    return np.asarray(picked, dtype=np.int64)


def _distances_to(features: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared L2 distance from every feature to its nearest centre (faiss flat search, k = 1)."""
    index = faiss.IndexFlatL2(features.shape[1])
    index.add(np.ascontiguousarray(centres, dtype=np.float32))
    distances, _ = index.search(features, 1)
    return np.maximum(distances[:, 0], 0.0)


def farthest_points_per_set(sets: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """Exact greedy k-center within each of B point sets at once: (B, N, D) -> (B, size) indices.

    The first stage of PatchCore's merge-and-reduce coreset: every image keeps its own farthest-point
    subset. Vectorised over the batch, one small tensor operation per pick.
    """
    b, n, _ = sets.shape
    if size >= n:
        return torch.arange(n).expand(b, n)
    generator = torch.Generator().manual_seed(seed)
    current = torch.randint(n, (b,), generator=generator)
    rows = torch.arange(b)
    picked = torch.empty((b, size), dtype=torch.int64)
    min_dist = torch.full((b, n), float("inf"))
    for step in range(size):
        picked[:, step] = current
        centre = sets[rows, current].unsqueeze(1)
        torch.minimum(min_dist, (sets - centre).square_().sum(-1), out=min_dist)
        min_dist[rows, current] = -1.0
        current = min_dist.argmax(dim=1)
    return picked
