"""The pruned exact search (`pruned_search.py`) returns the full scan's nearest distances, whatever it skips."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest

from cellsight.detectors.base import MapSize, TrainingSet
from cellsight.detectors.exact_search import ExactSearch
from cellsight.detectors.patchcore import PatchCore, _LeaveOut
from cellsight.detectors.pruned_search import PrunedSearch, PruneSettings, balanced_groups

SMALL = PruneSettings(bound_dims=12, group_rows=32, min_rows=256)
"""Settings that prune on the small banks of these tests (the defaults need >= 2,048 rows)."""


def _clustered(rng: np.random.Generator, rows: int, dim: int = 64, centres: int = 40) -> np.ndarray:
    """Patch-like data: clusters on a low-rank subspace plus isotropic noise, offset from the origin."""
    basis = rng.normal(size=(16, dim))
    centre = rng.normal(scale=3.0, size=(centres, 16)) @ basis
    which = rng.integers(0, centres, rows)
    return (centre[which] + rng.normal(scale=0.8, size=(rows, 16)) @ basis + rng.normal(scale=0.5, size=(rows, dim))
            + 4.0).astype(np.float32)


def _brute(queries: np.ndarray, bank: np.ndarray, left_out: np.ndarray | None = None) -> np.ndarray:
    """Nearest squared distances in float64, every row compared (the reference)."""
    q, b = queries.astype(np.float64), bank.astype(np.float64)
    distances = np.square(q).sum(1)[:, None] + np.square(b).sum(1)[None] - 2.0 * q @ b.T
    if left_out is not None:
        distances[:, left_out] = np.inf
    return np.maximum(distances.min(axis=1), 0.0)


def _assert_same(got: np.ndarray, expected: np.ndarray, scale: float) -> None:
    """Equal within float32 rounding: the squared distances' rounding grows with the centred norms (`scale`)."""
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)


def _scale(bank: np.ndarray) -> float:
    return float(np.square(bank - bank.mean(0)).sum(1).max())


def test_pruned_search_equals_the_full_scan_and_skips_most_of_the_bank() -> None:
    rng = np.random.default_rng(0)
    bank = _clustered(rng, 4096)
    near = bank[rng.integers(0, 4096, 400)] + rng.normal(scale=0.3, size=(400, 64)).astype(np.float32)
    queries = np.concatenate([near, _clustered(rng, 600)])
    search = ExactSearch(bank, chunk_rows=1000, prune=SMALL)
    got = search.squared(queries)
    _assert_same(got, _brute(queries, bank), _scale(bank))
    _assert_same(search.full_squared(queries), _brute(queries, bank), _scale(bank))
    stats = search._pruning().last_stats
    assert stats["searched"] < 0.5  # the certificate let it skip most groups: the test would pass by scanning all


def test_bank_rows_and_duplicates_and_ties_are_found_exactly() -> None:
    """Queries equal to bank rows (distance 0), banks with repeated rows, and queries midway between two rows."""
    rng = np.random.default_rng(1)
    base = _clustered(rng, 1024)
    bank = np.concatenate([base, base[:512], base[:256]])  # duplicates, some three times
    midway = (bank[:100] + bank[1000:1100]) / 2.0
    queries = np.concatenate([bank[rng.integers(0, len(bank), 300)], midway]).astype(np.float32)
    search = PrunedSearch(bank, ExactSearch(bank, prune=None).squared, SMALL)
    got = search.squared(queries)
    _assert_same(got, _brute(queries, bank), _scale(bank))
    assert np.all(got[:300] <= 1e-5 * _scale(bank))  # a bank row's own distance: 0 up to the product's rounding
    _assert_same(got, search.full(queries), _scale(bank))  # and the float32 full scan


def test_queries_far_from_everything_fall_back_to_the_full_scan() -> None:
    rng = np.random.default_rng(2)
    bank = _clustered(rng, 2048)
    far = rng.normal(scale=50.0, size=(50, 64)).astype(np.float32)
    calls: list[int] = []
    full = ExactSearch(bank, prune=None)

    def counted(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        return full.squared(rows)

    search = PrunedSearch(bank, counted, PruneSettings(bound_dims=12, group_rows=32, min_rows=256,
                                                       fallback_fraction=0.0))
    queries = np.concatenate([far, bank[:50]])
    _assert_same(search.squared(queries), _brute(queries, bank), _scale(bank))
    assert calls and 0 < search.last_stats["fallback"] <= 1.0


def test_results_do_not_depend_on_threads_and_repeat_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same rows give the same bits with 1 or 2 threads, call after call, and after pickling (Ray)."""
    rng = np.random.default_rng(3)
    bank = _clustered(rng, 3000)
    queries = _clustered(rng, 500)
    search = ExactSearch(bank, prune=SMALL)
    monkeypatch.setenv("CELLSIGHT_THREADS", "2")
    two = search.squared(queries)
    monkeypatch.setenv("CELLSIGHT_THREADS", "1")
    one = search.squared(queries)
    assert np.array_equal(one, two)
    again = search.squared(queries)
    assert np.array_equal(again, one)
    copy = pickle.loads(pickle.dumps(search))
    assert copy.prune == SMALL and np.array_equal(copy.squared(queries), one)


def test_default_pruning_applies_only_where_it_can_gain() -> None:
    rng = np.random.default_rng(4)
    assert ExactSearch(rng.normal(size=(8192, 152)).astype(np.float32)).prune is not None
    assert ExactSearch(rng.normal(size=(1000, 152)).astype(np.float32)).prune is None  # too few rows
    assert ExactSearch(rng.normal(size=(8192, 40)).astype(np.float32)).prune is None  # too few dims
    assert ExactSearch(rng.normal(size=(8192, 152)).astype(np.float32), prune=None).prune is None


def test_groups_cover_every_row_once_and_are_balanced() -> None:
    rng = np.random.default_rng(5)
    data = _clustered(rng, 1000)
    groups = balanced_groups(data - data.mean(0), 64)
    assert sorted(np.concatenate(groups).tolist()) == list(range(1000))
    assert max(len(g) for g in groups) <= 64 and min(len(g) for g in groups) >= 31


def test_leave_one_out_on_the_pruned_search_equals_brute_force() -> None:
    """Cross-fitting's search (whole bank, then the patches whose nearest row may be their own image's)."""
    rng = np.random.default_rng(6)
    bank = _clustered(rng, 3000)
    search = ExactSearch(bank, prune=SMALL)
    leave_out = _LeaveOut(bank, "exact", search)
    for image in range(3):
        own = np.arange(image * 500, image * 500 + 500)
        rows = bank[own[:200]] + rng.normal(scale=0.05, size=(200, 64)).astype(np.float32)  # its own patches, nearly
        _assert_same(leave_out.squared(rows, own), _brute(rows, bank, own), _scale(bank))


def test_patchcore_scores_with_the_pruned_search_match_the_full_scan() -> None:
    """A real backbone's features (152 dims) on smooth textured images; a bank big enough for the defaults."""
    rng = np.random.default_rng(7)

    def image() -> np.ndarray:
        noise = cv2.GaussianBlur(rng.normal(size=(64, 64)).astype(np.float32), (0, 0), 3.0)
        stripes = np.sin(np.arange(64) / rng.uniform(2.0, 6.0))[None, :] * 0.5
        return np.clip(128 + 400 * noise + 60 * stripes, 0, 255).astype(np.uint8)

    train = [image() for _ in range(40)]
    test = [image() for _ in range(6)]
    detector = PatchCore(image_size=64, bank_size=2048).fit(TrainingSet.good(train))
    assert isinstance(detector._index, ExactSearch) and detector._index.prune is not None
    pruned = detector.score(test, MapSize.WORKING)
    detector._index = ExactSearch(detector._index.bank, prune=None)
    full = detector.score(test, MapSize.WORKING)
    np.testing.assert_allclose(pruned.scores, full.scores, rtol=1e-5)
    assert pruned.maps is not None and full.maps is not None
    for a, b in zip(pruned.maps, full.maps, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_a_forked_child_searches_with_its_own_threads() -> None:
    """A process forked after a search (multiprocessing's default on Linux) must not wait on its parent's pool."""
    import multiprocessing

    rng = np.random.default_rng(8)
    bank = _clustered(rng, 2048)
    search = ExactSearch(bank, prune=SMALL)
    expected = search.squared(bank[:64])
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        got = pool.apply_async(search.squared, (bank[:64],)).get(timeout=60)
    assert np.array_equal(got, expected)
