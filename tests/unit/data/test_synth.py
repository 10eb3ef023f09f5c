"""Synthetic station images: deterministic, honest masks, a readable ID on every image, MVTec output."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import pytest

from cellsight.data import load_dataset, load_mvtec
from cellsight.data.cellcode import make_cell_id, read_cell_id
from cellsight.data.synth import STATIONS, render_cell, write_station_dataset
from cellsight.data.synth.common import label_for
from cellsight.errors import ConfigError

CASES = [(station, kind) for station, classes in STATIONS.items() for kind in (None, *classes)]


def test_stations_and_their_classes() -> None:
    assert STATIONS == {
        "electrode": ("pinhole", "agglomerate", "scratch", "uncoated", "streak"),
        "weld": ("missing_spot", "burn", "spatter", "crack"),
        "can": ("dent", "scratch", "leak_stain", "missing_film"),
    }


@pytest.mark.parametrize(("station", "kind"), CASES)
def test_same_arguments_same_bytes(station: str, kind: str | None) -> None:
    first = render_cell(station, "LC2601050000001", 3, kind)
    again = render_cell(station, "LC2601050000001", 3, kind)
    assert first.image.tobytes() == again.image.tobytes()
    assert np.array_equal(first.mask, again.mask)
    assert render_cell(station, "LC2601050000001", 4, kind).image.tobytes() != first.image.tobytes()


@pytest.mark.parametrize(("station", "kind"), CASES)
def test_masks_follow_the_defect_and_spare_the_label(station: str, kind: str | None) -> None:
    keep = label_for(256).keepout
    for seed in range(5):
        cell = render_cell(station, make_cell_id(seed), seed, kind)
        assert cell.image.dtype == np.uint8
        assert cell.image.shape == ((256, 256, 3) if station == "weld" else (256, 256))
        assert cell.mask.dtype == bool and cell.mask.shape == (256, 256)
        assert cell.defect_class == (kind or "good")
        assert cell.mask.any() == (kind is not None)
        assert not cell.mask[:keep, :keep].any()


def test_defect_only_changes_pixels_outside_the_label() -> None:
    keep = label_for(256).keepout
    good = render_cell("can", "LC2601050000001", 9)
    bad = render_cell("can", "LC2601050000001", 9, "missing_film")
    assert np.array_equal(good.image[:keep, :keep], bad.image[:keep, :keep])
    changed = np.abs(good.image.astype(int) - bad.image.astype(int)) > 0
    assert changed[bad.mask].mean() > 0.5


def test_defects_range_from_a_few_pixels_to_a_large_share_of_the_image() -> None:
    tiny = min(int(render_cell("electrode", "X1", seed, "pinhole").mask.sum()) for seed in range(12))
    large = max(int(render_cell("can", "X1", seed, "missing_film").mask.sum()) for seed in range(30))
    assert tiny <= 13  # a 3-px pinhole
    assert large >= 0.3 * 256 * 256


@pytest.mark.parametrize("station", list(STATIONS))
def test_the_cell_id_reads_back_on_nearly_every_image(station: str) -> None:
    kinds = (None, *STATIONS[station])
    ids = [make_cell_id(seed, day=date(2026, 1, 5)) for seed in range(100)]
    read = [read_cell_id(render_cell(station, ids[s], s, kinds[s % len(kinds)]).image) for s in range(100)]
    assert sum(r == i for r, i in zip(read, ids, strict=True)) >= 99
    assert all(r in (None, i) for r, i in zip(read, ids, strict=True))  # never a wrong ID


@pytest.mark.parametrize("size", [128, 384])
def test_other_sizes(size: int) -> None:
    cell = render_cell("weld", "LC2601050000042", 1, "spatter", size=size)
    assert cell.image.shape == (size, size, 3) and cell.mask.any()
    assert read_cell_id(cell.image) == "LC2601050000042"


def test_unknown_station_class_or_size_names_the_choices() -> None:
    with pytest.raises(ValueError, match="electrode, weld, can"):
        render_cell("cathode", "X", 0)
    with pytest.raises(ValueError, match="dent, scratch, leak_stain, missing_film"):
        render_cell("can", "X", 0, "pinhole")
    with pytest.raises(ValueError, match="size"):
        render_cell("can", "X", 0, size=32)


def test_writer_output_loads_as_mvtec_with_labels_masks_and_ids(tmp_path: Path) -> None:
    folder = write_station_dataset("weld", tmp_path, n_train=3, n_test_good=2, n_test_per_defect=2, seed=1)
    assert folder == tmp_path / "weld"
    data = load_mvtec(folder)
    assert len(load_dataset(folder)) == len(data) == 3 + 2 + 4 * 2
    assert len(data.select(split="train", label=0)) == 3
    assert len(data.select(split="test", label=0)) == 2
    for kind in STATIONS["weld"]:
        items = data.select(defect_class=kind).items
        assert len(items) == 2 and all(i.label == 1 and i.mask_path is not None for i in items)
        for item in items:
            mask = cv2.imread(str(item.mask_path), cv2.IMREAD_GRAYSCALE)
            assert mask.shape == (256, 256) and set(np.unique(mask)) == {0, 255}
    with (folder / "cells.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(data) and len({r["cell_id"] for r in rows}) == len(rows)
    first = rows[-1]
    image = cv2.imread(str(folder / first["file"]))
    assert read_cell_id(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)) == first["cell_id"]
    assert first["split"] == "test" and first["defect_class"] == "crack"


def test_writer_is_reproducible_and_refuses_to_mix_runs(tmp_path: Path) -> None:
    a = write_station_dataset("electrode", tmp_path / "a", 2, 1, 1, seed=5)
    b = write_station_dataset("electrode", tmp_path / "b", 2, 1, 1, seed=5)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    with pytest.raises(ConfigError, match="not empty"):
        write_station_dataset("electrode", tmp_path / "a", 2, 1, 1, seed=5)
    write_station_dataset("electrode", tmp_path / "a", 1, 1, 0, seed=6, overwrite=True)
    assert len(load_mvtec(a)) == 2
    with pytest.raises(ValueError, match="n_train"):
        write_station_dataset("electrode", tmp_path / "c", -1, 1, 1, seed=0)
