from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cellsight.detectors.coreset import exact_greedy_coreset, farthest_points_per_set, greedy_coreset


def _clustered(seed: int, n: int = 3000, dim: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim)) * 6
    return (centres[rng.integers(0, 40, n)] + rng.normal(size=(n, dim))).astype(np.float32)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), size=st.integers(1, 300))
def test_batched_greedy_selects_exactly_what_the_sequential_loop_selects(seed: int, size: int) -> None:
    features = _clustered(seed)
    fast = greedy_coreset(features, size, batch=64, seed=seed)
    slow = exact_greedy_coreset(features, size, seed=seed)
    assert len(fast) == size
    assert len(set(fast.tolist())) == size
    assert fast[0] == slow[0]
    # Both are greedy k-center up to float32 near-ties (faiss and einsum round differently): every pick of
    # either is, in float64, the farthest point from the picks before it, to within rounding.
    _assert_each_pick_is_farthest(features, fast)
    _assert_each_pick_is_farthest(features, slow)


def _assert_each_pick_is_farthest(features: np.ndarray, picks: np.ndarray) -> None:
    points = features.astype(np.float64)
    nearest = np.full(len(points), np.inf)
    for step, pick in enumerate(picks.tolist()):
        if step > 0:
            assert nearest[pick] >= nearest.max() * (1 - 1e-5), f"pick {step} is not the farthest point"
        np.minimum(nearest, ((points - points[pick]) ** 2).sum(axis=1), out=nearest)


def test_greedy_coreset_covers_rare_clusters_that_random_sampling_misses() -> None:
    rng = np.random.default_rng(1)
    common = rng.normal(size=(20_000, 8)).astype(np.float32)
    rare = (rng.normal(size=(5, 8)) + 40).astype(np.float32)  # 5 rare normal patches far away
    features = np.concatenate([common, rare])
    chosen = greedy_coreset(features, 50)
    assert set(range(20_000, 20_005)) & set(chosen.tolist())


def test_size_at_least_n_keeps_everything() -> None:
    features = _clustered(0, n=10)
    assert sorted(greedy_coreset(features, 10).tolist()) == list(range(10))
    assert sorted(greedy_coreset(features, 50).tolist()) == list(range(10))


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        greedy_coreset(_clustered(0, n=10), 0)


def test_per_set_farthest_points_match_the_exact_greedy_of_each_set() -> None:
    sets = np.stack([_clustered(seed, n=256, dim=8) for seed in range(4)])
    picked = farthest_points_per_set(torch.from_numpy(sets), 20, seed=3).numpy()
    for features, indices in zip(sets, picked, strict=True):
        first = int(indices[0])
        dist = ((features - features[first]) ** 2).sum(1)
        expected = [first]
        dist[first] = -1
        for _ in range(19):
            nxt = int(np.argmax(dist))
            expected.append(nxt)
            dist = np.minimum(dist, ((features - features[nxt]) ** 2).sum(1))
            dist[expected] = -1
        assert indices.tolist() == expected
