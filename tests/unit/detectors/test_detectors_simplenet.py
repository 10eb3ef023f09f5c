"""SimpleNet-style detector: what its training promises beyond the shared contract and good-only checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cellsight.data import LazyImages, load_mvtec
from cellsight.detectors.base import MapSize, TrainingSet, fold_members
from cellsight.detectors.simplenet import SimpleNet, SimpleNetSettings, train_discriminator
from cellsight.errors import ConfigError, ModelFileError

TINY = {"image_size": 64, "layers": (1, 2), "hidden": 64, "steps": 150, "batch_patches": 256, "batch_size": 4}


def test_discriminator_scores_good_rows_above_rows_off_their_manifold() -> None:
    """Good rows on a plane in 8-D (as real patch features lie near a low-dimensional set): after training
    against noisy copies, good rows score as good and rows moved off the plane as anomalous."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(8, 8)))[0]
    rows = torch.from_numpy((rng.normal(0.0, 2.0, (4000, 2)) @ basis[:, :2].T + 3.0).astype(np.float32))
    settings = SimpleNetSettings(hidden=64, steps=400, batch_patches=512, learning_rate=1e-3, noise_scales=2)
    model = train_discriminator(rows, settings)
    assert torch.allclose(model.mean, rows.mean(0)) and torch.allclose(1.0 / model.inv_std, rows.std(0))
    off = rows[:500] + torch.from_numpy(2.0 * basis[:, 5].astype(np.float32))  # 2 units off the plane
    with torch.inference_mode():
        assert (model(rows) > 0).float().mean() > 0.95
        assert (model(off) < 0).float().mean() > 0.95


def test_training_is_seeded_and_leaves_the_global_generator_alone() -> None:
    rows = torch.from_numpy(np.random.default_rng(1).normal(size=(500, 4)).astype(np.float32))
    settings = SimpleNetSettings(hidden=16, steps=20, batch_patches=64)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = train_discriminator(rows, settings)
    assert torch.equal(torch.rand(1), before)
    second = train_discriminator(rows, settings)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = train_discriminator(rows, settings.model_copy(update={"seed": 1}))
    assert not torch.equal(other.net[0].weight, first.net[0].weight)


def test_cross_fit_scores_each_good_with_a_model_that_did_not_see_it(tiny_mvtec: Path) -> None:
    """A fold's scores equal a fresh detector fitted on the other folds' images (all patches kept, so the
    cached-feature shortcut trains on exactly the rows a refit would)."""
    goods = list(LazyImages(load_mvtec(tiny_mvtec).select(split="train", label=0).paths))[:9]
    folds = [i % 3 for i in range(len(goods))]
    detector = SimpleNet(**TINY)
    scores = detector.cross_fit(TrainingSet.good(goods), folds)
    assert detector.fitted and scores.shape == (len(goods),)
    held, rest = fold_members(folds)[1]
    refit = SimpleNet(**TINY).fit(TrainingSet.good([goods[i] for i in rest]))
    expected = refit.score([goods[i] for i in held], MapSize.NONE).scores
    np.testing.assert_allclose(scores[held], expected, rtol=1e-5, atol=1e-5)
    full = SimpleNet(**TINY).fit(TrainingSet.good(goods))
    np.testing.assert_array_equal(detector.score(goods[:3]).scores, full.score(goods[:3]).scores)
    assert "3 folds" in detector.cross_fit_method(folds)


def test_settings_and_model_file_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="noise_std"):
        SimpleNet(noise_std=0.0)
    with pytest.raises(ConfigError, match="ignore_boxes"):
        SimpleNet(ignore_boxes=[(0.5, 0.5, 0.2, 0.9)])
    detector = SimpleNet(**TINY)
    with pytest.raises(ModelFileError, match="feature_dim"):
        detector.restore({"feature_dim": "x"}, {})
    with pytest.raises(ModelFileError, match="does not match"):
        detector.restore({"feature_dim": 7}, {})
