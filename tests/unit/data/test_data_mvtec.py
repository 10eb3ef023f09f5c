"""load_mvtec on tiny generated folders in the MVTec AD layout and its variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cellsight.data.errors import DatasetError
from cellsight.data.mvtec import is_mvtec_layout, load_mvtec


def make_tree(root: Path, files: list[str]) -> Path:
    """Write a real 4x4 PNG at every relative path (masks too)."""
    for relative in files:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(path, "PNG")
    return root


MVTEC = [
    "train/good/000.png",
    "train/good/001.png",
    "test/good/000.png",
    "test/crack/000.png",
    "test/crack/001.png",
    "test/finger/000.png",
    "ground_truth/crack/000_mask.png",
    "ground_truth/crack/001.png",
]


def test_standard_layout(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "cells", MVTEC)
    dataset = load_mvtec(root)
    assert dataset.name == "cells"
    rows = [(i.split, i.defect_class, i.label, i.path.relative_to(root).as_posix()) for i in dataset]
    assert rows == [
        ("train", "good", 0, "train/good/000.png"),
        ("train", "good", 0, "train/good/001.png"),
        ("test", "good", 0, "test/good/000.png"),
        ("test", "crack", 1, "test/crack/000.png"),
        ("test", "crack", 1, "test/crack/001.png"),
        ("test", "finger", 1, "test/finger/000.png"),
    ]
    masks = {i.path.relative_to(root).as_posix(): i.mask_path for i in dataset}
    assert masks["test/crack/000.png"] == root / "ground_truth/crack/000_mask.png"
    assert masks["test/crack/001.png"] == root / "ground_truth/crack/001.png"
    assert masks["test/finger/000.png"] is None  # masks are optional per class
    assert masks["test/good/000.png"] is None
    assert masks["train/good/000.png"] is None  # same file name as a masked test image, no mask
    assert dataset.has_masks


def test_val_split_and_supervised_training_classes(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "line2",
        ["train/good/a.png", "train/crack/b.png", "val/good/c.png", "val/crack/d.png", "test/good/e.png"],
    )
    dataset = load_mvtec(root, name="line2-cells")
    assert dataset.name == "line2-cells"
    assert [(i.split, i.label, i.defect_class) for i in dataset] == [
        ("train", 0, "good"),
        ("train", 1, "crack"),
        ("val", 0, "good"),
        ("val", 1, "crack"),
        ("test", 0, "good"),
    ]
    assert not dataset.has_masks


def test_test_only_folder_and_any_case_for_good(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "eval", ["test/Good/x.png", "test/scratch/y.jpg"])
    dataset = load_mvtec(root)
    assert [(i.label, i.defect_class) for i in dataset] == [(0, "good"), (1, "scratch")]


def test_nested_and_hidden_files(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "d", ["train/good/day1/a.png", "train/good/.thumbs/a.png", "train/good/._b.png"]
    )
    assert [i.path.relative_to(root).as_posix() for i in load_mvtec(root)] == ["train/good/day1/a.png"]


def test_unrecognised_layout_names_the_folder(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "plain", ["a.png", "b.png"])
    assert not is_mvtec_layout(root)
    with pytest.raises(DatasetError, match=r"plain: not an MVTec AD layout.*train.*good.*a\.png"):
        load_mvtec(root)


def test_collection_of_categories_points_at_one(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "mvtec", ["bottle/train/good/a.png", "cable/test/good/a.png"])
    with pytest.raises(DatasetError, match=r"mvtec: holds several MVTec categories \(bottle, cable\)"):
        load_mvtec(root)


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nope: folder not found"):
        load_mvtec(tmp_path / "nope")


def test_no_images_at_all(tmp_path: Path) -> None:
    (tmp_path / "empty" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError, match="empty: no images"):
        load_mvtec(tmp_path / "empty")


def test_images_directly_in_split_folder(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "d", ["train/good/a.png", "test/loose.png"])
    with pytest.raises(DatasetError, match=r"test: 1 image\(s\) directly in test/ \(e\.g\. loose\.png\)"):
        load_mvtec(root)


def test_mask_matching_no_image_is_an_error(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "d", ["test/crack/000.png", "ground_truth/crack/000-mask.png"])
    with pytest.raises(DatasetError, match=r"000-mask\.png: mask matches no image"):
        load_mvtec(root)


def test_two_masks_for_one_image(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "d",
        ["test/crack/000.png", "ground_truth/crack/000.png", "ground_truth/crack/000_mask.png"],
    )
    with pytest.raises(DatasetError, match=r"several masks for 000\.png"):
        load_mvtec(root)


def test_masks_for_a_class_without_test_images(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "d", ["test/crack/000.png", "ground_truth/dent/000_mask.png"])
    with pytest.raises(DatasetError, match=r"dent: masks for class 'dent'"):
        load_mvtec(root)


def test_masks_of_train_defects_are_read_when_no_test_image_takes_their_stem(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "d", [
        "train/good/000.png", "train/crack/train_000.png", "train/crack/000.png", "train/dent/train_000.png",
        "test/crack/000.png", "ground_truth/crack/000_mask.png", "ground_truth/crack/train_000_mask.png",
        "ground_truth/dent/train_000_mask.png",
    ])
    masks = {i.path.relative_to(root).as_posix(): i.mask_path for i in load_mvtec(root)}
    assert masks["test/crack/000.png"] == root / "ground_truth/crack/000_mask.png"  # the test image's, as before
    assert masks["train/crack/000.png"] is None
    assert masks["train/crack/train_000.png"] == root / "ground_truth/crack/train_000_mask.png"
    assert masks["train/dent/train_000.png"] == root / "ground_truth/dent/train_000_mask.png"  # no test/dent/
