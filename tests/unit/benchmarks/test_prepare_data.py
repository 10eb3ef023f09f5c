"""The public-set preparation scripts: masks from the sets' own annotation formats, a fetched repo read by git."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from _prepare import export_tree, split_indices
from prepare_bsdata import polygon_mask
from prepare_deeppcb import box_mask, pairs


def test_deeppcb_boxes_fill_inclusive_rectangles() -> None:
    mask = box_mask("2 3 4 5 1\n0 0 0 0 6\n", 8, 8)
    assert mask[3:6, 2:5].min() == 255 and mask[0, 0] == 255
    assert int((mask > 0).sum()) == 3 * 3 + 1


def test_deeppcb_without_boxes_is_refused() -> None:
    with pytest.raises(SystemExit, match="without defect boxes"):
        box_mask("\n", 8, 8)


def test_deeppcb_listing_pairs_image_stem_and_annotation() -> None:
    listed = pairs("group1/1/0001.jpg group1/1_not/0001.txt\n")
    assert listed == [("group1/1/0001", "group1/1_not/0001.txt")]


def test_bsdata_polygons_are_filled() -> None:
    square = {"shapes": [{"label": "Pitting", "points": [[1, 1], [4, 1], [4, 4], [1, 4]]}]}
    mask = polygon_mask(square, 6, 6)
    assert mask[1:5, 1:5].min() == 255 and mask[0].max() == 0 and mask[5].max() == 0


def test_bsdata_annotation_without_shapes_is_refused() -> None:
    with pytest.raises(SystemExit, match="without shapes"):
        polygon_mask({"shapes": []}, 4, 4)


def test_split_indices_partition_everything_once() -> None:
    parts = split_indices(20, (0.55, 0.15, 0.30), seed=0)
    assert [len(p) for p in parts] == [11, 3, 6]
    assert sorted(np.concatenate(parts).tolist()) == list(range(20))


def test_export_tree_reads_a_bare_repository(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "a.txt").write_text("hello")
    run = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    subprocess.run([*run, "add", "."], check=True)
    subprocess.run([*run, "commit", "-qm", "x"], check=True)
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    for repo in (work, bare):
        out = tmp_path / f"out-{repo.name}"
        commit = export_tree(repo, ["data"], out)
        assert len(commit) == 40 and (out / "data" / "a.txt").read_text() == "hello"
