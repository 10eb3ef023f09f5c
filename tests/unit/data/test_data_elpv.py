"""load_elpv on the real installed elpv-dataset package: counts, labels, classes, split agreement."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from cellsight.data.dataset import Dataset
from cellsight.data.elpv import elpv_data_dir, load_elpv
from cellsight.data.errors import DatasetError


@pytest.fixture(scope="module")
def elpv() -> Dataset:
    return load_elpv()


def test_counts_match_the_benchmark_split(elpv: Dataset) -> None:
    assert elpv.name == "elpv"
    assert len(elpv) == 2624
    assert len(elpv.select(split="train")) == 1970
    test = elpv.select(split="test")
    assert len(test) == 654
    assert len(test.select(label=1)) == 204
    assert len(test.select(label=0)) == 450
    assert len(elpv.select(split="train", defect_class="good")) == 1131


def test_labels_classes_and_meta_follow_the_probability(elpv: Dataset) -> None:
    expected_class = {
        "0.0": "good",
        "0.3333333333333333": "maybe_good",
        "0.6666666666666666": "maybe_defective",
        "1.0": "defective",
    }
    for item in elpv:
        probability = item.meta["probability"]
        assert item.defect_class == expected_class[probability]
        assert item.label == (1 if float(probability) >= 0.5 else 0)
        assert item.meta["type"] in ("mono", "poly")
    assert Counter(item.meta["type"] for item in elpv) == {"poly": 1550, "mono": 1074}


def test_images_stay_in_the_installed_package(elpv: Dataset) -> None:
    data_dir = elpv_data_dir()
    first = elpv.items[0]
    assert first.path == data_dir / "images" / "cell0001.png"
    assert first.path.is_file()
    repo_src = Path(__file__).resolve().parents[3] / "src"
    assert not list(repo_src.rglob("cell0001.png"))


def test_disagreeing_package_labels_fail_clearly(tmp_path: Path) -> None:
    data_dir = elpv_data_dir()
    lines = (data_dir / "labels.csv").read_text().splitlines()
    lines[3] = lines[3].replace("0.0", "1.0").replace("mono", "poly")  # cell0004: good mono in the split
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        DatasetError, match=r"disagrees with cellsight's elpv_split\.csv: cell0004\.png: probability"
    ):
        load_elpv(tmp_path)


def test_missing_image_in_package_copy_fails_clearly(tmp_path: Path) -> None:
    shutil.copy(elpv_data_dir() / "labels.csv", tmp_path / "labels.csv")
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=r"cell0001\.png: ELPV image missing"):
        load_elpv(tmp_path)


def test_one_split_needs_only_its_own_images(tmp_path: Path, elpv: Dataset) -> None:
    """A training machine given only the train cells loads the train split; the test split is not read."""
    shutil.copy(elpv_data_dir() / "labels.csv", tmp_path / "labels.csv")
    (tmp_path / "images").mkdir()
    train = elpv.select(split="train")
    for item in train:
        (tmp_path / "images" / item.path.name).symlink_to(item.path)
    loaded = load_elpv(tmp_path, splits=("train",))
    assert [i.path.name for i in loaded] == [i.path.name for i in train]
    assert loaded.labels == train.labels
    with pytest.raises(DatasetError, match="ELPV image missing"):
        load_elpv(tmp_path)
    with pytest.raises(DatasetError, match="not val"):
        load_elpv(tmp_path, splits=("val",))
