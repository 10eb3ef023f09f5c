"""Write a station's synthetic images as an MVTec AD folder that load_mvtec and load_dataset read."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import cv2
import numpy as np

from cellsight.data.cellcode import make_cell_id
from cellsight.data.dataset import GOOD
from cellsight.data.mvtec import GROUND_TRUTH, MASK_SUFFIX
from cellsight.data.synth.render import check_station, render_cell
from cellsight.errors import ConfigError, DataError

_FIRST_DAY = date(2026, 1, 5)  # IDs must not depend on the day the set is written
_SEEDS_PER_SET = 1_000_000


def write_station_dataset(station: str, root: Path, n_train: int, n_test_good: int, n_test_per_defect: int,
                          seed: int, size: int = 256, overwrite: bool = False,
                          progress: Callable[[int], None] | None = None, n_train_per_defect: int = 0) -> Path:
    """Write root/<station>/{train/good, test/<class>, ground_truth/<class>} plus cells.csv.

    `n_train_per_defect` labelled defects per class go to train/<class>/train_000.png ..., their masks
    beside the test masks (ground_truth/<class>/train_000_mask.png): the few examples a station has
    to name its defects. They come last, so the other images keep their bytes and cell IDs.

    Every image gets its own render seed and a unique cell ID (serial = running number), so one
    call is reproducible byte for byte. An existing non-empty station folder is an error unless
    `overwrite`: stale images from a larger earlier run would silently join the new set.
    Returns the station folder.
    """
    classes = check_station(station)
    counts = (("n_train", n_train), ("n_test_good", n_test_good), ("n_test_per_defect", n_test_per_defect),
              ("n_train_per_defect", n_train_per_defect))
    for name, count in counts:
        if count < 0:
            raise ConfigError(f"{name} must be >= 0, got {count}")
    if n_train + n_test_good == 0:
        raise ConfigError("n_train + n_test_good must be > 0: a data set needs good images")
    folder = Path(root) / station
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise ConfigError(f"{folder}: exists and is not empty; pass overwrite to replace it")
        shutil.rmtree(folder)
    plan = [("train", GOOD, i) for i in range(n_train)] + [("test", GOOD, i) for i in range(n_test_good)]
    plan += [("test", kind, i) for kind in classes for i in range(n_test_per_defect)]
    plan += [("train", kind, i) for kind in classes for i in range(n_train_per_defect)]
    day = _FIRST_DAY + timedelta(days=seed % 365)
    rows: list[tuple[str, str, str, str]] = []
    for serial, (split, kind, index) in enumerate(plan, start=1):
        cell_id = make_cell_id(serial, day=day)
        cell = render_cell(station, cell_id, seed * _SEEDS_PER_SET + serial, None if kind == GOOD else kind, size)
        stem = f"train_{index:03d}" if split == "train" and kind != GOOD else f"{index:03d}"
        relative = Path(split) / kind / f"{stem}.png"
        _write_png(folder / relative, cell.image)
        if kind != GOOD:
            _write_png(folder / GROUND_TRUTH / kind / f"{stem}{MASK_SUFFIX}.png", cell.mask.astype(np.uint8) * 255)
        rows.append((relative.as_posix(), cell_id, split, kind))
        if progress is not None:
            progress(1)
    with (folder / "cells.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("file", "cell_id", "split", "defect_class"))
        writer.writerows(rows)
    return folder


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), pixels):
        raise DataError(f"{path}: could not write image")
