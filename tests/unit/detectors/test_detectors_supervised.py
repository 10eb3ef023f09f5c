"""Supervised and hybrid detectors on tiny generated labelled data: learning, determinism, model file."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from cellsight.calibration import calibrate_for_overkill
from cellsight.data import LazyImages
from cellsight.data.manifest import load_manifest
from cellsight.data.mvtec import load_mvtec
from cellsight.detectors.base import LabelledImages
from cellsight.detectors.ensemble import SupervisedEnsemble
from cellsight.detectors.finetune import FLIPS, Augmentation, balanced_class_weights, flip_view
from cellsight.detectors.hybrid import Hybrid
from cellsight.detectors.registry import detector_class
from cellsight.detectors.supervised import Supervised, choose_device, fine_tune_mode
from cellsight.detectors.training import warmup_cosine
from cellsight.metrics import image_auroc
from cellsight.modelfile import load_model, save_model
from cellsight.workflows.train import labelled_images, labelled_split

TINY = {"image_size": 64, "views": 2, "max_epochs": 3, "batch_size": 16, "lr": 3e-3}


def _split(root: Path, masks: bool) -> tuple[LabelledImages, LabelledImages, LabelledImages]:
    dataset = load_manifest(root / "manifest.csv") if masks else load_mvtec(root)
    split = labelled_split(dataset, 0.2, seed=0)
    val = type(dataset)(dataset.name, split.good.items + split.defective.items)
    return labelled_images(split.fit), labelled_images(val), labelled_images(dataset.select(split="test"))


@pytest.fixture(scope="module")
def fitted(tiny_labelled: Path) -> tuple[Supervised, LabelledImages]:
    train, val, test = _split(tiny_labelled, masks=True)
    return Supervised(**TINY).fit_labelled(train, val), test


def test_registered_and_uses_labels() -> None:
    assert detector_class("supervised") is Supervised
    assert Supervised.uses_labels and Hybrid.uses_labels
    assert not detector_class("patchcore").uses_labels


def test_learns_the_tiny_task(fitted: tuple[Supervised, LabelledImages]) -> None:
    detector, test = fitted
    scores, maps = detector.score_images(test.images)
    assert image_auroc(list(test.labels), scores) >= 0.9
    assert all(m.shape == image.shape[:2] for m, image in zip(maps, test.images, strict=True))


def test_masks_train_a_segmentation_head(fitted: tuple[Supervised, LabelledImages]) -> None:
    detector, _ = fitted
    assert detector.segmentation and detector.net is not None and detector.net.seg_head is not None
    mid = detector.net.trunk(torch.zeros(2, 3, 64, 64))
    out = detector.net.top(mid)
    assert out.seg_logits is not None and out.seg_logits.shape == (2, *mid.shape[-2:])
    assert detector.defect_classes == ["crack", "spot"]


def test_deterministic_with_a_seed(tiny_labelled: Path, fitted: tuple[Supervised, LabelledImages]) -> None:
    train, val, test = _split(tiny_labelled, masks=True)
    again = Supervised(**TINY).fit_labelled(train, val)
    np.testing.assert_array_equal(again.score_images(test.images)[0], fitted[0].score_images(test.images)[0])


def test_model_file_round_trip_gives_identical_scores(
    fitted: tuple[Supervised, LabelledImages], tmp_path: Path
) -> None:
    detector, test = fitted
    scores, _ = detector.score_images(test.images)
    detector.calibration = calibrate_for_overkill(scores[np.asarray(test.labels) == 0], 0.1)
    save_model(tmp_path / "m.safetensors", detector, training={})
    loaded = load_model(tmp_path / "m.safetensors").detector
    assert isinstance(loaded, Supervised)
    np.testing.assert_array_equal(loaded.score_images(test.images)[0], scores)
    predictions = loaded.predict(test.images)
    assert {p.defect_class for p in predictions if p.verdict == "NG"} <= {"crack", "spot"}


def test_test_time_flips_average_the_logits(fitted: tuple[Supervised, LabelledImages]) -> None:
    detector, test = fitted
    images = list(test.images[:4])
    tta = detector.tta
    try:
        detector.tta = False
        views = [detector.score_images([flip_view(im, v) for im in images])[0] for v in range(len(FLIPS))]
        detector.tta = True
        scores, maps = detector.score_images(images)
    finally:
        detector.tta = tta
    np.testing.assert_allclose(scores, np.mean(views, axis=0), rtol=1e-4, atol=1e-4)
    assert maps[0].shape == images[0].shape[:2]
    # The cached path (benchmarks) agrees with score_images.
    detector.tta = True
    try:
        encoded = detector.encode_tta(LabelledImages(images, [0] * 4, [""] * 4, [None] * 4))
        np.testing.assert_allclose(detector.score_encoded(encoded, all_views=True), scores, rtol=1e-4, atol=1e-4)
    finally:
        detector.tta = tta


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


def test_model_files_from_before_tta_load_with_their_settings(fitted: tuple[Supervised, LabelledImages]) -> None:
    detector, _ = fitted
    config = {k: v for k, v in detector.config().items() if k not in ("tta", "label_smoothing", "warmup_epochs")}
    loaded = Supervised.from_state(config, detector.tensors())
    assert loaded.tta is False and loaded.label_smoothing == 0.0


def test_tensors_are_saved_on_the_cpu(fitted: tuple[Supervised, LabelledImages]) -> None:
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


def test_good_only_fit_is_refused() -> None:
    with pytest.raises(ValueError, match="labelled"):
        Supervised(**TINY).fit(LazyImages([]))


def test_hybrid_combines_and_round_trips(tiny_labelled: Path, tmp_path: Path) -> None:
    """Also: without masks (MVTec layout, train masks unknown) the supervised map is the class activation map."""
    train, val, test = _split(tiny_labelled, masks=False)
    hybrid = Hybrid(
        patchcore={"image_size": 64, "bank_size": 128, "search": "exact"}, supervised={**TINY, "max_epochs": 2}
    ).fit_labelled(train, val)
    scores, maps = hybrid.score_images(test.images)
    assert image_auroc(list(test.labels), scores) >= 0.9
    assert maps[0].shape == test.images[0].shape[:2]
    hybrid.calibration = calibrate_for_overkill(scores[np.asarray(test.labels) == 0], 0.1)
    flagged = [p for p in hybrid.predict(test.images) if p.verdict == "NG"]
    assert flagged and {p.defect_class for p in flagged} <= {"crack", "spot"}  # the supervised part names them
    net = hybrid.supervised.net
    assert not hybrid.supervised.segmentation and net is not None and net.seg_head is None
    out = net.top(net.trunk(torch.rand(1, 3, 64, 64)))
    # The map's spatial mean is the logit: score and map share one scale.
    assert torch.allclose(out.map.mean(), out.logit[0], atol=1e-4)
    hybrid.calibration = calibrate_for_overkill(scores[np.asarray(test.labels) == 0], 0.1)
    save_model(tmp_path / "h.safetensors", hybrid, training={})
    loaded = load_model(tmp_path / "h.safetensors").detector
    np.testing.assert_allclose(loaded.score_images(test.images)[0], scores, rtol=1e-6, atol=1e-6)


def test_end_to_end_fine_tuning_learns_and_round_trips(
    tiny_labelled: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """fine_tune="full" (the GPU default) trains the whole net on freshly augmented images; its model file
    loads and scores like any other, and a seed gives the same model on the CPU."""
    train, val, test = _split(tiny_labelled, masks=True)
    settings = {**TINY, "fine_tune": "full", "max_epochs": 4, "device": "cpu"}
    with caplog.at_level(logging.WARNING, logger="cellsight.detectors.supervised"):
        detector = Supervised(**settings).fit_labelled(train, val)
    assert "fine_tune=top trains in minutes" in caplog.text  # the CPU user is told what full costs
    assert detector.fine_tune == "full" and detector.frozen_blocks == 1
    assert detector.net is not None and detector.net.seg_head is not None
    trained = [n for n, p in detector.net.named_parameters() if p.requires_grad]
    assert any(n.startswith("backbone.blocks.1.") for n in trained)
    scores, _ = detector.score_images(test.images)
    assert image_auroc(list(test.labels), scores) >= 0.9
    prepared = detector.prepare(test)
    np.testing.assert_allclose(detector.score_prepared(prepared), scores, rtol=1e-4, atol=1e-4)
    again = Supervised(**settings).fit_labelled(train, val)
    np.testing.assert_array_equal(again.score_images(test.images)[0], scores)
    detector.calibration = calibrate_for_overkill(scores[np.asarray(test.labels) == 0], 0.1)
    save_model(tmp_path / "full.safetensors", detector, training={})
    loaded = load_model(tmp_path / "full.safetensors").detector
    assert isinstance(loaded, Supervised) and loaded.fine_tune == "full" and loaded.frozen_blocks == 1
    np.testing.assert_array_equal(loaded.score_images(test.images)[0], scores)


def test_fine_tune_mode_follows_the_device() -> None:
    assert fine_tune_mode("auto", torch.device("cpu")) == "top"
    assert fine_tune_mode("auto", torch.device("cuda")) == "full"
    assert fine_tune_mode("full", torch.device("cpu")) == "full"
    assert Supervised(device="cpu").frozen_blocks == 6
    with pytest.raises(ValueError, match="fine_tune"):
        fine_tune_mode("all", torch.device("cpu"))


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
    train, val, test = _split(tiny_labelled, masks=True)
    ensemble = SupervisedEnsemble(members=2, supervised=TINY).fit_labelled(train, val)
    assert [m.seed for m in ensemble.members] == [0, 1]
    scores, maps = ensemble.score_images(test.images)
    member_scores = [m.score_images(test.images)[0] for m in ensemble.members]
    np.testing.assert_allclose(scores, np.mean(member_scores, axis=0), rtol=1e-6, atol=1e-6)
    assert image_auroc(list(test.labels), scores) >= 0.9
    assert maps[0].shape == test.images[0].shape[:2]
    ensemble.calibration = calibrate_for_overkill(scores[np.asarray(test.labels) == 0], 0.1)
    save_model(tmp_path / "ensemble.safetensors", ensemble, training={})
    loaded = load_model(tmp_path / "ensemble.safetensors").detector
    assert isinstance(loaded, SupervisedEnsemble) and len(loaded.members) == 2
    np.testing.assert_array_equal(loaded.score_images(test.images)[0], scores)
    flagged = [p for p in loaded.predict(test.images) if p.verdict == "NG"]
    assert flagged and {p.defect_class for p in flagged} <= {"crack", "spot"}
    # Members trained apart join as they are; members that disagree on the classes are refused.
    joined = SupervisedEnsemble.from_members(ensemble.members)
    np.testing.assert_array_equal(joined.score_images(test.images)[0], scores)
    other = Supervised(**TINY)
    other.build(["scratch"], segmentation=False)
    with pytest.raises(ValueError, match="same defect classes"):
        SupervisedEnsemble.from_members([ensemble.members[0], other])
