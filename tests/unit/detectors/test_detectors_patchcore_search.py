from __future__ import annotations

import pickle

import faiss
import numpy as np
import pytest

from cellsight.detectors.base import MapSize, TrainingSet
from cellsight.detectors.exact_search import ExactSearch
from cellsight.detectors.patchcore import PatchCore, _build_index
from cellsight.errors import ConfigError


def test_hnsw_search_finds_the_exact_neighbour_for_almost_every_query() -> None:
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(4000, 32)).astype(np.float32)
    queries = (bank[rng.integers(0, 4000, 500)] + rng.normal(scale=0.3, size=(500, 32))).astype(np.float32)
    exact, _ = _flat(bank).search(queries, 1)
    approx, _ = _build_index(bank, "hnsw").search(queries, 1)
    assert np.all(approx[:, 0] >= exact[:, 0] - 1e-4)  # an approximate neighbour is never nearer
    assert np.mean(np.isclose(approx[:, 0], exact[:, 0], rtol=1e-4)) > 0.95


def test_unknown_search_method_is_refused() -> None:
    with pytest.raises(ConfigError, match="search: Input should be 'hnsw' or 'exact'"):
        PatchCore(search="annoy")


def test_per_image_fraction_is_validated() -> None:
    with pytest.raises(ConfigError, match="per_image_fraction"):
        PatchCore(per_image_fraction=0.0)


def test_matrix_product_search_used_on_gpus_is_exact() -> None:
    """The GPU path's search, run here on the CPU, against faiss's exact flat index."""
    import torch

    from cellsight.detectors.patchcore import nearest_squared_distances

    rng = np.random.default_rng(1)
    bank = rng.normal(size=(3000, 48)).astype(np.float32)
    queries = rng.normal(size=(700, 48)).astype(np.float32)
    expected, _ = _flat(bank).search(queries, 1)
    got = nearest_squared_distances(torch.from_numpy(queries), torch.from_numpy(bank), chunk=256).numpy()
    np.testing.assert_allclose(got, expected[:, 0], rtol=1e-4, atol=1e-3)


def test_cuda_runtime_is_refused_without_a_gpu() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    detector = PatchCore(runtime="cuda", image_size=32)  # settings are only stored: the runtime resolves in fit
    with pytest.raises(ConfigError, match="needs an NVIDIA GPU"):
        detector.fit(TrainingSet.good([np.zeros((32, 32), np.uint8)]))


@pytest.mark.parametrize("search", ["exact", "hnsw"])
def test_an_images_score_does_not_depend_on_its_batch(search: str) -> None:
    """Ray Serve and the pipelined line batch images unlike a local call: the scores must agree bit for bit."""
    rng = np.random.default_rng(3)
    train = [rng.integers(0, 255, (64, 64), dtype=np.uint8) for _ in range(12)]
    test = [rng.integers(0, 255, (64, 64), dtype=np.uint8) for _ in range(15)]
    detector = PatchCore(image_size=64, bank_size=256, search=search)
    detector.fit(TrainingSet.good(train))
    together = detector.score(test).scores
    apart = np.concatenate([detector.score(test[i : i + 3]).scores for i in range(0, len(test), 3)])
    assert np.array_equal(together, apart)


def _flat(bank: np.ndarray) -> faiss.Index:
    """faiss's exact flat scan: the search "exact" ran on before `exact_search.py`."""
    index = faiss.IndexFlatL2(bank.shape[1])
    index.add(bank)
    return index


def test_exact_search_graph_agrees_with_the_flat_scan_and_with_float64() -> None:
    """Bank in several chunks, queries near bank rows (distances ~0) and far from them, an offset mean."""
    rng = np.random.default_rng(4)
    bank = (rng.normal(size=(2500, 40)) + 5.0).astype(np.float32)
    near = bank[rng.integers(0, 2500, 300)] + rng.normal(scale=0.05, size=(300, 40))
    far = rng.normal(size=(300, 40)) * 3.0 + 5.0
    queries = np.concatenate([near, far]).astype(np.float32)
    search = ExactSearch(bank, chunk_rows=1000)
    got = search.squared(queries)
    expected64 = ((queries[:, None, :].astype(np.float64) - bank[None].astype(np.float64)) ** 2).sum(2).min(1)
    flat, _ = _flat(bank).search(queries, 1)
    assert got.shape == (600,) and got.dtype == np.float32 and np.all(got >= 0.0)
    np.testing.assert_allclose(np.sqrt(got), np.sqrt(expected64), rtol=1e-5, atol=2e-3)
    np.testing.assert_allclose(np.sqrt(got), np.sqrt(np.maximum(flat[:, 0], 0.0)), rtol=1e-5, atol=2e-3)
    assert np.array_equal(pickle.loads(pickle.dumps(search)).squared(queries), got)
    assert search.squared(queries[:0]).shape == (0,)


def test_exact_scores_match_the_flat_scan() -> None:
    """PatchCore's default scores with the graph search equal those of faiss's flat scan within rounding."""
    rng = np.random.default_rng(5)
    train = [rng.integers(0, 255, (64, 64), dtype=np.uint8) for _ in range(8)]
    test = [rng.integers(0, 255, (64, 64), dtype=np.uint8) for _ in range(5)]
    detector = PatchCore(image_size=64, bank_size=300).fit(TrainingSet.good(train))
    assert isinstance(detector._index, ExactSearch)
    graph = detector.score(test, MapSize.WORKING)
    assert detector.memory_bank is not None
    detector._index = _flat(detector.memory_bank)
    flat = detector.score(test, MapSize.WORKING)
    np.testing.assert_allclose(graph.scores, flat.scores, rtol=1e-5)
    assert graph.maps is not None and flat.maps is not None
    for a, b in zip(graph.maps, flat.maps, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
