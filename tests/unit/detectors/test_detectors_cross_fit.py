"""Cross-fitting: every good gets a score from a model that never saw it, and the final model is `fit`'s.

PatchCore reuses one backbone pass for every fold; its scores must be the ones a fresh fit per fold gives
(the generic path every other good-only detector takes), and its bank the one `fit` builds on all goods.
"""

from __future__ import annotations

import numpy as np
import pytest

from cellsight.detectors.base import Detector, LearnsFrom, TrainingSet, refit_fold_scores
from cellsight.detectors.classical import Classical
from cellsight.detectors.patchcore import PatchCore, _build_index, _LeaveOut
from cellsight.errors import ConfigError, DataError
from cellsight.workflows.train import TrainRequest, fold_ids

TINY = {"image_size": 32, "layers": (1, 2), "bank_size": 64, "batch_size": 4, "projection_dim": 16}


def _goods(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.linspace(0, np.pi, 40, dtype=np.float32)[None, :]
    return [np.clip(120 + 30 * np.sin(x * (1 + i % 3)) + rng.normal(0, 6, (40, 40)), 0, 255).astype(np.uint8)
            for i in range(n)]


def test_folds_are_seeded_balanced_and_capped_by_the_image_count() -> None:
    ids = fold_ids(23, 5, seed=3)
    assert ids == fold_ids(23, 5, seed=3) and ids != fold_ids(23, 5, seed=4)
    assert sorted(np.bincount(ids).tolist()) == [4, 4, 5, 5, 5]
    assert set(fold_ids(3, 5, seed=0)) == {0, 1, 2}
    with pytest.raises(DataError, match="too few"):
        fold_ids(1, 5, seed=0)
    with pytest.raises(ConfigError, match="folds must be 0"):
        TrainRequest(folds=1)


def test_patchcore_leaves_each_good_out_of_fits_bank() -> None:
    goods = _goods(6)
    crossed = PatchCore(**TINY)  # type: ignore[arg-type]
    scores = crossed.cross_fit(TrainingSet.good(goods), fold_ids(len(goods), 3, seed=0))
    plain = PatchCore(**TINY).fit(TrainingSet.good(goods))  # type: ignore[arg-type]
    np.testing.assert_array_equal(crossed.memory_bank, plain.memory_bank)  # the final model is fit's
    # the bank holds every patch here (bank_size >= the pool): leaving one image out is a refit without it
    alone = refit_fold_scores(PatchCore(**{**TINY, "bank_size": 4096}), goods, list(range(len(goods))))  # type: ignore[arg-type]
    big = PatchCore(**{**TINY, "bank_size": 4096})  # type: ignore[arg-type]
    np.testing.assert_allclose(big.cross_fit(TrainingSet.good(goods), [0] * 3 + [1] * 3), alone, rtol=1e-4, atol=1e-5)
    assert np.all(scores > 0) and not np.allclose(scores, plain.score(goods).scores)
    # the graph search leaves rows out too; it can only find a row as near as the exact scan, or farther
    graph = PatchCore(**{**TINY, "search": "hnsw"})  # type: ignore[arg-type]
    graph_scores = graph.cross_fit(TrainingSet.good(goods), fold_ids(len(goods), 3, seed=0))
    assert np.all(graph_scores >= scores - 1e-4)
    # what `cellsight train` prints and the model file records: no folds were used, each image was left out
    assert crossed.cross_fit_method(fold_ids(len(goods), 3, seed=0)) == "leave-one-image-out"
    tiled = PatchCore(**{**TINY, "tile_size": 32, "tile_overlap": 8})  # type: ignore[arg-type]
    assert tiled.cross_fit_method(fold_ids(len(goods), 3, seed=0)) == "3 folds"  # tiled fits refit per fold


def test_the_generic_path_refits_per_fold_for_other_good_only_detectors() -> None:
    goods = _goods(12, seed=1)
    folds = fold_ids(len(goods), 4, seed=0)
    detector: Detector = Classical(image_size=32)  # type: ignore[arg-type]
    assert detector.learns_from is LearnsFrom.GOOD
    scores = detector.cross_fit(TrainingSet.good(goods), folds)
    held = [i for i, f in enumerate(folds) if f == 2]
    rest = [g for i, g in enumerate(goods) if folds[i] != 2]
    alone = Classical(image_size=32).fit(TrainingSet.good(rest))  # type: ignore[arg-type]
    np.testing.assert_allclose(scores[held], alone.score([goods[i] for i in held]).scores, rtol=1e-6)
    assert detector.fitted and detector.cross_fit_method(folds) == "4 folds"


@pytest.mark.parametrize("search", ["exact", "hnsw"])
def test_leave_out_search_matches_brute_force(search: str) -> None:
    rng = np.random.default_rng(0)
    bank = (rng.normal(size=(300, 24)) * 5 + 40).astype(np.float32)  # far from 0: float32 cancellation shows
    queries = np.concatenate([bank[:20] + rng.normal(scale=1e-3, size=(20, 24)).astype(np.float32),
                              rng.normal(size=(30, 24)).astype(np.float32) * 5 + 40])
    left_out = np.arange(0, 40, dtype=np.int64)  # covers the rows the first queries sit on
    found = _LeaveOut(bank, search, _build_index(bank, search)).squared(queries, left_out)
    kept = np.delete(bank, left_out, axis=0).astype(np.float64)
    truth = ((queries.astype(np.float64)[:, None, :] - kept[None]) ** 2).sum(axis=2).min(axis=1)
    np.testing.assert_allclose(found, truth, rtol=1e-3 if search == "exact" else 0.2)
    assert np.all(found >= truth * (1 - 1e-3))  # never nearer than the nearest row kept


def test_a_bank_from_one_image_cannot_leave_it_out() -> None:
    with pytest.raises(DataError, match="one image"):
        PatchCore(**{**TINY, "bank_size": 1}).cross_fit(TrainingSet.good(_goods(2)), [0, 1])  # type: ignore[arg-type]
