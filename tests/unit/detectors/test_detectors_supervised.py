"""Supervised, hybrid and ensemble detectors on tiny generated labelled data: what each learns, its maps and
names, and its settings. (Seed determinism and the model file's exact round trip: test_contract.py.)"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from cellsight.calibration import calibrate_for_overkill
from cellsight.data.manifest import load_manifest
from cellsight.data.mvtec import load_mvtec
from cellsight.detectors.base import LearnsFrom, MapSize, TrainingSet
from cellsight.detectors.hybrid import Hybrid
from cellsight.detectors.registry import detector_class
from cellsight.detectors.supervised import Supervised, SupervisedSettings, choose_device, fine_tune_mode
from cellsight.detectors.supervised.ensemble import SupervisedEnsemble
from cellsight.detectors.supervised.finetune import FLIPS, Augmentation, balanced_class_weights, flip_view
from cellsight.detectors.supervised.training import warmup_cosine
from cellsight.errors import ConfigError, DataError
from cellsight.metrics import image_auroc
from cellsight.modelfile import load_model, save_model
from cellsight.workflows.train import labelled_images, labelled_split

TINY = {"image_size": 64, "views": 2, "max_epochs": 3, "batch_size": 16, "lr": 3e-3}


def _split(root: Path, masks: bool) -> tuple[TrainingSet, TrainingSet]:
    """The training set (with its held-out validation part) and the test set."""
    dataset = load_manifest(root / "manifest.csv") if masks else load_mvtec(root)
    split = labelled_split(dataset, 0.2, seed=0)
    val = type(dataset)(dataset.name, split.good.items + split.defective.items)
    return labelled_images(split.fit, val), labelled_images(dataset.select(split="test"))


@pytest.fixture(scope="module")
def fitted(tiny_labelled: Path) -> tuple[Supervised, TrainingSet]:
    train, test = _split(tiny_labelled, masks=True)
    return Supervised(**TINY).fit(train), test


def test_registered_and_learns_from_labels() -> None:
    assert detector_class("supervised") is Supervised
    assert Supervised.learns_from is Hybrid.learns_from is SupervisedEnsemble.learns_from is LearnsFrom.LABELLED
    assert detector_class("patchcore").learns_from is LearnsFrom.GOOD_AND_DEFECT_NAMES


def test_learns_the_tiny_task(fitted: tuple[Supervised, TrainingSet]) -> None:
    detector, test = fitted
    out = detector.score(test.images)
    assert image_auroc(list(test.labels), out.scores) >= 0.9
    assert out.maps is not None
    assert all(m.shape == image.shape[:2] for m, image in zip(out.maps, test.images, strict=True))
    working = detector.score(test.images, MapSize.WORKING).maps
    assert detector.net is not None
    net_map = detector.net.top(detector.net.trunk(torch.zeros(1, 3, 64, 64))).map
    assert working is not None and working[0].shape == tuple(net_map.shape[-2:])  # the net's own map resolution


def test_ng_predictions_are_named_by_the_class_head(fitted: tuple[Supervised, TrainingSet]) -> None:
    detector, test = fitted
    scores = detector.score(test.images, MapSize.NONE).scores
    detector.calibration = calibrate_for_overkill(scores[np.asarray(test.labels) == 0], 0.1)
    predictions = detector.predict(test.images)
    flagged = [p for p in predictions if p.verdict == "NG"]
    assert flagged and {p.defect_class for p in flagged} <= {"crack", "spot"}
    assert all(p.defect_class is None for p in predictions if p.verdict == "OK")


def test_fit_resolves_the_mode_and_stores_what_it_used(fitted: tuple[Supervised, TrainingSet]) -> None:
    """`__init__` only stores the settings; `fit` decides "auto" for the device and keeps the resolved copy."""
    assert SupervisedSettings().fine_tune == "auto" and Supervised().settings.frozen_blocks is None
    detector, _ = fitted
    assert (detector.settings.fine_tune, detector.settings.frozen_blocks) == ("top", 6)  # the CPU's choice
    stored = detector.config()["settings"]
    assert isinstance(stored, dict) and stored["fine_tune"] == "top" and "device" not in stored


def test_masks_train_a_segmentation_head(fitted: tuple[Supervised, TrainingSet]) -> None:
    detector, _ = fitted
    assert detector.segmentation and detector.net is not None and detector.net.seg_head is not None
    mid = detector.net.trunk(torch.zeros(2, 3, 64, 64))
    out = detector.net.top(mid)
    assert out.seg_logits is not None and out.seg_logits.shape == (2, *mid.shape[-2:])
    assert detector.defect_classes == ["crack", "spot"]


def test_test_time_flips_average_the_logits(fitted: tuple[Supervised, TrainingSet]) -> None:
    detector, test = fitted
    images = list(test.images[:4])
    settings = detector.settings
    assert settings.tta
    try:
        detector.settings = settings.model_copy(update={"tta": False})
        views = [detector.score([flip_view(im, v) for im in images]).scores for v in range(len(FLIPS))]
    finally:
        detector.settings = settings
    scores = detector.score(images).scores
    np.testing.assert_allclose(scores, np.mean(views, axis=0), rtol=1e-4, atol=1e-4)
    # The cached path (benchmarks) agrees with score.
    encoded = detector.encode_tta(TrainingSet.good(images))
    np.testing.assert_allclose(detector.score_encoded(encoded, all_views=True), scores, rtol=1e-4, atol=1e-4)


def test_flip_views_invert_themselves() -> None:
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert len({flip_view(image, v).tobytes() for v in range(len(FLIPS))}) == 4
    for v in range(len(FLIPS)):
        np.testing.assert_array_equal(flip_view(flip_view(image, v), v), image)


def test_warmup_then_cosine_schedule() -> None:
    factor = warmup_cosine(total_steps=100, warmup_steps=10)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5) and factor(100) == pytest.approx(0.0, abs=1e-9)
    assert all(factor(s) >= factor(s + 1) for s in range(10, 100))


def test_model_files_from_before_tta_load_with_their_settings(fitted: tuple[Supervised, TrainingSet]) -> None:
    """An old file: one flat config, without the settings added since (they get the values it had)."""
    detector, _ = fitted
    state, settings = detector.fitted_config(), detector.settings.to_json()
    old = {**state, **{k: v for k, v in settings.items() if k not in ("tta", "label_smoothing", "warmup_epochs")}}
    loaded = Supervised.from_state(old, detector.tensors())
    assert loaded.settings.tta is False and loaded.settings.label_smoothing == 0.0


def test_tensors_are_saved_on_the_cpu(fitted: tuple[Supervised, TrainingSet]) -> None:
    detector, _ = fitted
    assert all(t.device.type == "cpu" for t in detector.tensors().values())


def test_device_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device().type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_device().type == "cuda"
    assert choose_device("cpu").type == "cpu"


def test_class_balanced_weights() -> None:
    weights = balanced_class_weights([0] * 90 + [1] * 10, 2)
    np.testing.assert_allclose(weights, [100 / 180, 100 / 20])
    # Each class then carries the same total weight.
    assert weights[0] * 90 == pytest.approx(weights[1] * 10)
    np.testing.assert_allclose(balanced_class_weights([1, 1], 3), [0.0, 1.0, 0.0])


def test_augmentation_moves_mask_with_image() -> None:
    image = np.zeros((32, 32), np.float32)
    image[4:8, 4:8] = 1.0
    rng = np.random.default_rng(0)
    for _ in range(5):
        out, mask = Augmentation(brightness=0.0, contrast=0.0)(image, image.copy(), rng)
        assert mask is not None
        # Same place; the mask is resampled nearest-neighbour, the image linearly: edges may differ by a pixel.
        moved, marked = out > 0.5, mask > 0.5
        assert marked.sum() >= 9 and (moved != marked).sum() <= 8


def test_good_only_or_unvalidated_fit_is_refused(tiny_labelled: Path) -> None:
    goods = [np.zeros((64, 64), np.uint8)] * 4
    with pytest.raises(DataError, match="both good and defective"):
        Supervised(**TINY).fit(TrainingSet.good(goods))
    train, _ = _split(tiny_labelled, masks=True)
    unvalidated = TrainingSet(train.images, train.labels, train.defect_classes, train.masks)
    with pytest.raises(DataError, match="validation set"):
        Supervised(**TINY).fit(unvalidated)


def test_hybrid_combines_and_round_trips(tiny_labelled: Path, tmp_path: Path) -> None:
    """Also: without masks (MVTec layout, train masks unknown) the supervised map is the class activation map."""
    train, test = _split(tiny_labelled, masks=False)
    hybrid = Hybrid(
        patchcore={"image_size": 64, "bank_size": 128, "search": "exact"}, supervised={**TINY, "max_epochs": 2}
    ).fit(train)
    assert hybrid.settings.patchcore.seed == hybrid.settings.supervised.seed == 0  # parts take the hybrid's seed
    out = hybrid.score(test.images)
    scores, maps = out.scores, out.maps
    assert image_auroc(list(test.labels), scores) >= 0.9
    assert maps is not None and maps[0].shape == test.images[0].shape[:2]
    working = hybrid.score(test.images[:2], MapSize.WORKING).maps
    assert working is not None and working[0].shape == (64, 64)  # PatchCore's working size
    hybrid.calibration = calibrate_for_overkill(scores[np.asarray(test.labels) == 0], 0.1)
    flagged = [p for p in hybrid.predict(test.images) if p.verdict == "NG"]
    assert flagged and {p.defect_class for p in flagged} <= {"crack", "spot"}  # the supervised part names them
    net = hybrid.supervised.net
    assert not hybrid.supervised.segmentation and net is not None and net.seg_head is None
    out = net.top(net.trunk(torch.rand(1, 3, 64, 64)))
    # The map's spatial mean is the logit: score and map share one scale.
    assert torch.allclose(out.map.mean(), out.logit[0], atol=1e-4)
    save_model(tmp_path / "h.safetensors", hybrid, training={})
    loaded = load_model(tmp_path / "h.safetensors").detector
    np.testing.assert_array_equal(loaded.score(test.images).scores, scores)


def test_end_to_end_fine_tuning_learns_and_round_trips(
    tiny_labelled: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """fine_tune="full" (the GPU default) trains the whole net on freshly augmented images; its model file
    loads and scores like any other, and a seed gives the same model on the CPU."""
    train, test = _split(tiny_labelled, masks=True)
    settings = {**TINY, "fine_tune": "full", "max_epochs": 4, "device": "cpu"}
    with caplog.at_level(logging.WARNING, logger="cellsight.detectors.supervised"):
        detector = Supervised(**settings).fit(train)
    assert "fine_tune=top trains in minutes" in caplog.text  # the CPU user is told what full costs
    assert detector.settings.fine_tune == "full" and detector.settings.frozen_blocks == 1
    assert detector.net is not None and detector.net.seg_head is not None
    trained = [n for n, p in detector.net.named_parameters() if p.requires_grad]
    assert any(n.startswith("backbone.blocks.1.") for n in trained)
    scores = detector.score(test.images).scores
    assert image_auroc(list(test.labels), scores) >= 0.9
    prepared = detector.prepare(test)
    np.testing.assert_allclose(detector.score_prepared(prepared), scores, rtol=1e-4, atol=1e-4)
    again = Supervised(**settings).fit(train)
    np.testing.assert_array_equal(again.score(test.images).scores, scores)
    detector.calibration = calibrate_for_overkill(scores[np.asarray(test.labels) == 0], 0.1)
    save_model(tmp_path / "full.safetensors", detector, training={})
    loaded = load_model(tmp_path / "full.safetensors").detector
    assert isinstance(loaded, Supervised)
    assert loaded.settings.fine_tune == "full" and loaded.settings.frozen_blocks == 1
    np.testing.assert_array_equal(loaded.score(test.images).scores, scores)


def test_fine_tune_mode_follows_the_device() -> None:
    assert fine_tune_mode("auto", torch.device("cpu")) == "top"
    assert fine_tune_mode("auto", torch.device("cuda")) == "full"
    assert fine_tune_mode("full", torch.device("cpu")) == "full"
    assert SupervisedSettings().resolved(torch.device("cpu")).frozen_blocks == 6
    assert SupervisedSettings().resolved(torch.device("cuda")).frozen_blocks == 1
    with pytest.raises(ConfigError, match="fine_tune"):
        Supervised(fine_tune="all")


def test_batch_augmentation_moves_mask_with_image_and_keeps_flips_exact() -> None:
    images = torch.zeros(6, 1, 32, 32)
    images[:, :, 4:8, 4:8] = 1.0
    augmentation = Augmentation(brightness=0.0, contrast=0.0)
    out, masks = augmentation.batch(images, images.clone(), torch.Generator().manual_seed(0))
    assert masks is not None and out.shape == images.shape
    moved, marked = out > 0.5, masks > 0.5
    assert (marked.sum(dim=(1, 2, 3)) >= 9).all()
    assert ((moved != marked).sum(dim=(1, 2, 3)) <= 8).all()
    # Without shift the views are exact flips of the image.
    flips_only = Augmentation(max_shift=0.0, brightness=0.0, contrast=0.0)
    ramp = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(8, 1, 1, 1) / 15
    views, _ = flips_only.batch(ramp, None, torch.Generator().manual_seed(1))
    candidates = [ramp[0].flip(d) if d else ramp[0] for d in ([], [1], [2], [1, 2])]
    for view in views:
        assert any(torch.allclose(view, c, atol=1e-6) for c in candidates)
    assert len({tuple(v.flatten().tolist()) for v in views}) > 1
    # Same seed, same views.
    again, _ = flips_only.batch(ramp, None, torch.Generator().manual_seed(1))
    assert torch.equal(again, views)


def test_ensemble_is_the_mean_of_its_members_and_round_trips(tiny_labelled: Path, tmp_path: Path) -> None:
    train, test = _split(tiny_labelled, masks=True)
    ensemble = SupervisedEnsemble(members=2, supervised=TINY).fit(train)
    assert [m.settings.seed for m in ensemble.members] == [0, 1]
    out = ensemble.score(test.images)
    scores, maps = out.scores, out.maps
    member_scores = [m.score(test.images).scores for m in ensemble.members]
    np.testing.assert_allclose(scores, np.mean(member_scores, axis=0), rtol=1e-6, atol=1e-6)
    assert image_auroc(list(test.labels), scores) >= 0.9
    assert maps is not None and maps[0].shape == test.images[0].shape[:2]
    ensemble.calibration = calibrate_for_overkill(scores[np.asarray(test.labels) == 0], 0.1)
    save_model(tmp_path / "ensemble.safetensors", ensemble, training={})
    loaded = load_model(tmp_path / "ensemble.safetensors").detector
    assert isinstance(loaded, SupervisedEnsemble) and len(loaded.members) == 2
    np.testing.assert_array_equal(loaded.score(test.images).scores, scores)
    flagged = [p for p in loaded.predict(test.images) if p.verdict == "NG"]
    assert flagged and {p.defect_class for p in flagged} <= {"crack", "spot"}
    # Members trained apart join as they are; members that disagree on the classes are refused.
    joined = SupervisedEnsemble.from_members(ensemble.members)
    np.testing.assert_array_equal(joined.score(test.images).scores, scores)
    other = Supervised(**TINY)
    other.build(["scratch"], segmentation=False)
    with pytest.raises(ConfigError, match="same defect classes"):
        SupervisedEnsemble.from_members([ensemble.members[0], other])
